/* The Lua scripts of rooms across nodes (rooms_bus.c), each one atomic in
 * Redis: the keys they keep are
 *   bulwark:rooms:next          the last room id given (INCR: never reused;
 *                               raised to what the nodes have known after
 *                               a restart that lost it)
 *   bulwark:rooms               the ids of the rooms there are
 *   bulwark:room:ID             the room's password verifier (salt, hash)
 *   bulwark:room:ID:m           its members: NODE/CONN -> "KEY\nNAME"
 *   bulwark:room:ID:n           its names' keys -> NODE/CONN (taken once)
 *   bulwark:node:NODE           the node's heartbeat (expires in 5 s)
 *   bulwark:node:NODE:rooms     the rooms the node has (had) members in
 *   bulwark:nodes               the nodes that beat
 *   bulwark:members             the members of every room, counted
 * and a room's lines and notices go to the channel bulwark:room:ID as
 * "NODE/CONN\nTEXT" (the sender, then what every other member is sent).
 */
#include "svc/rooms/rooms_int.h"

const char rbus_lua_lookup[] = "local r='bulwark:room:'..ARGV[1] "
			       "local v=redis.call('HMGET',r,'salt','hash') "
			       "if not v[1] then return nil end "
			       "return {v[1],v[2],redis.call('HLEN',r..':m')}";

const char rbus_lua_create[] =
	"if redis.call('SCARD','bulwark:rooms')>=tonumber(ARGV[6]) then "
	"return -1 end "
	"local id=redis.call('INCR','bulwark:rooms:next') "
	"while redis.call('EXISTS','bulwark:room:'..id)==1 do "
	"id=redis.call('INCR','bulwark:rooms:next') end "
	"if id>4294967295 then return -2 end "
	"local r='bulwark:room:'..id "
	"redis.call('HSET',r,'salt',ARGV[1],'hash',ARGV[2]) "
	"redis.call('SADD','bulwark:rooms',id) "
	"redis.call('HSET',r..':n',ARGV[4],ARGV[3]) "
	"redis.call('HSET',r..':m',ARGV[3],ARGV[4]..'\\n'..ARGV[5]) "
	"redis.call('SADD','bulwark:node:'..ARGV[7]..':rooms',id) "
	"redis.call('INCR','bulwark:members') "
	"return id";

const char rbus_lua_join[] =
	"local r='bulwark:room:'..ARGV[1] "
	"if redis.call('EXISTS',r)==0 then return -1 end "
	"if redis.call('HLEN',r..':m')>=tonumber(ARGV[5]) then return -2 end "
	"if redis.call('HSETNX',r..':n',ARGV[3],ARGV[2])==0 then return 0 end "
	"redis.call('HSET',r..':m',ARGV[2],ARGV[3]..'\\n'..ARGV[4]) "
	"redis.call('SADD','bulwark:node:'..ARGV[6]..':rooms',ARGV[1]) "
	"redis.call('INCR','bulwark:members') "
	"redis.call('PUBLISH',r,ARGV[2]..'\\n'..ARGV[4]..' has joined the "
	"group\\n') "
	"return 1";

/* ARGV: id, member, notice ("": none) */
const char rbus_lua_leave[] =
	"local r='bulwark:room:'..ARGV[1] "
	"local v=redis.call('HGET',r..':m',ARGV[2]) "
	"if not v then return -1 end "
	"redis.call('HDEL',r..':m',ARGV[2]) "
	"redis.call('DECR','bulwark:members') "
	"local k=string.sub(v,1,string.find(v,'\\n',1,true)-1) "
	"if redis.call('HGET',r..':n',k)==ARGV[2] then "
	"redis.call('HDEL',r..':n',k) end "
	"if ARGV[3]~='' then redis.call('PUBLISH',r,ARGV[2]..'\\n'..ARGV[3]) "
	"end "
	"if redis.call('HLEN',r..':m')==0 then "
	"redis.call('DEL',r,r..':m',r..':n') "
	"redis.call('SREM','bulwark:rooms',ARGV[1]) end "
	"return 0";

/* The members of node (all of them, or of a dead one) out of their rooms,
 * with notice (ARGV[2], "" for none); empty rooms deleted. */
#define LUA_DROP_NODE                                                          \
	"local function drop(node,notice) "                                    \
	"local rs='bulwark:node:'..node..':rooms' "                            \
	"for _,id in ipairs(redis.call('SMEMBERS',rs)) do "                    \
	"local r='bulwark:room:'..id "                                         \
	"local m=redis.call('HGETALL',r..':m') "                               \
	"for i=1,#m,2 do "                                                     \
	"if string.sub(m[i],1,#node+1)==node..'/' then "                       \
	"local nl=string.find(m[i+1],'\\n',1,true) "                           \
	"redis.call('HDEL',r..':m',m[i]) "                                     \
	"redis.call('DECR','bulwark:members') "                                \
	"redis.call('HDEL',r..':n',string.sub(m[i+1],1,nl-1)) "                \
	"if notice~='' then redis.call('PUBLISH',r,m[i]..'\\n'.."              \
	"string.sub(m[i+1],nl+1)..notice) end end end "                        \
	"if redis.call('HLEN',r..':m')==0 then "                               \
	"redis.call('DEL',r,r..':m',r..':n') "                                 \
	"redis.call('SREM','bulwark:rooms',id) end end "                       \
	"redis.call('DEL',rs) end "

/* ARGV: self, milliseconds to live. This node's heartbeat: 0 if it had
 * been reaped (taken out of bulwark:nodes, its members with it) while it
 * still ran (a pause of its own, or of Redis): then it writes its members
 * again. 1 otherwise (a key that lapsed unreaped has lost nothing). */
const char rbus_lua_beat[] =
	"local was=redis.call('SISMEMBER','bulwark:nodes',ARGV[1]) "
	"redis.call('SET','bulwark:node:'..ARGV[1],'1','PX',ARGV[2]) "
	"redis.call('SADD','bulwark:nodes',ARGV[1]) "
	"return was";

/* ARGV: self, notice. Every node that stopped beating is dropped. */
const char rbus_lua_reap[] = LUA_DROP_NODE
	"local n=0 "
	"for _,node in ipairs(redis.call('SMEMBERS','bulwark:nodes')) "
	"do "
	"if node~=ARGV[1] and "
	"redis.call('EXISTS','bulwark:node:'..node)==0 then "
	"drop(node,ARGV[2]) redis.call('SREM','bulwark:nodes',node) "
	"n=n+1 end end "
	"return n";

/* ARGV: self, notice. This node's members, as Redis had them, go (with
 * notice: "" after an outage, when the members it has now are written
 * again after it by lua_rejoin; a leave at start-up, when they are an
 * earlier process's, gone with it). */
const char rbus_lua_forget[] = LUA_DROP_NODE "drop(ARGV[1],ARGV[2]) return 0";

/* ARGV: an id this node has known: the counter is raised to it (a Redis
 * restarted without its data begins at 0 again). */
const char rbus_lua_floor[] =
	"if tonumber(redis.call('GET','bulwark:rooms:next') or '0')<"
	"tonumber(ARGV[1]) then "
	"redis.call('SET','bulwark:rooms:next',ARGV[1]) end return 0";

/* ARGV: id, salt, hash, member, key, name, node, max members: a member
 * written again (the room too if it went), without a notice; 0 if its
 * name was given to another member meanwhile (the others reaped this node
 * while it was cut off), -2 if the room filled up meanwhile. */
const char rbus_lua_rejoin[] =
	"local r='bulwark:room:'..ARGV[1] "
	"if redis.call('EXISTS',r)==0 then "
	"redis.call('HSET',r,'salt',ARGV[2],'hash',ARGV[3]) "
	"redis.call('SADD','bulwark:rooms',ARGV[1]) end "
	"local o=redis.call('HGET',r..':n',ARGV[5]) "
	"if o and o~=ARGV[4] then return 0 end "
	"if redis.call('HEXISTS',r..':m',ARGV[4])==0 and "
	"redis.call('HLEN',r..':m')>=tonumber(ARGV[8]) then return -2 end "
	"redis.call('HSET',r..':n',ARGV[5],ARGV[4]) "
	"if redis.call('HSET',r..':m',ARGV[4],ARGV[5]..'\\n'..ARGV[6])==1 then "
	"redis.call('INCR','bulwark:members') end "
	"redis.call('SADD','bulwark:node:'..ARGV[7]..':rooms',ARGV[1]) "
	"return 1";
