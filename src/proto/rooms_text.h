/* The rooms protocol's fixed texts (docs/rooms.md), shared by the daemon
 * that says them and the client that must recognise them. Each is one
 * line without its newline; the menu is several.
 */
#ifndef BULWARK_PROTO_ROOMS_TEXT_H
#define BULWARK_PROTO_ROOMS_TEXT_H

/* The menu, asked again after every wrong choice; its last line tells a
 * client that the menu is waiting for an answer. */
#define BW_ROOMS_MENU_LAST "3. Exit the server."
#define BW_ROOMS_MENU                                                          \
	"Hello client, please choose an option:\n"                             \
	"1. Connect to a group chat.\n"                                        \
	"2. Create a group chat.\n" BW_ROOMS_MENU_LAST "\n"

/* The questions of the menu's steps. */
#define BW_ROOMS_ASK_NAME      "Enter your name:"
#define BW_ROOMS_ASK_ROOM_PASS "Enter password for the group:"
#define BW_ROOMS_ASK_ID	       "Enter group ID:"
#define BW_ROOMS_ASK_PASS      "Enter password:"

/* Entering a room: a joiner is told JOINED followed by the room's number;
 * a creator is told the number, JOINED and then IN_ROOM. */
#define BW_ROOMS_CREATED "The id of the group is:"
#define BW_ROOMS_JOINED	 "You're connected to group chat #"
#define BW_ROOMS_IN_ROOM "You can start to talk!"

/* Too many wrong ids or passwords: the server closes the connection. */
#define BW_ROOMS_TOO_MANY "Too many wrong attempts, goodbye."

#endif
