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
 *   bulwark:node:NODE:in        the rooms the node has members in now:
 *                               ID -> how many (a room leaves at 0)
 *   bulwark:node:NODE:reap      where the reaping of a dead node stands
 *                               (its HSCAN cursor over :in)
 *   bulwark:nodes               the nodes that beat
 *   bulwark:reaping             the nodes taken for dead, being reaped
 *   bulwark:members             the members of every room, counted
 * and a room's lines and notices go to the channel bulwark:room:ID as
 * "NODE/CONN\nTEXT" (the sender, then what every other member is sent).
 *
 * A room is only ever joined, or joined again, by one who holds its own
 * verifier: an id may be given again after Redis lost its data, and two
 * rooms must never merge under it. Reaping a node and forgetting this
 * node's members go in steps of bounded work (about REAP_WORK members
 * looked at), so that Redis answers everyone else in between.
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
	"redis.call('HINCRBY','bulwark:node:'..ARGV[7]..':in',id,1) "
	"redis.call('INCR','bulwark:members') "
	"return id";

/* ARGV: id, member, key, name, max members, node, salt, hash (the
 * verifier the password was checked against: -1 if the room has another
 * now, as if it had gone). The notice is the joining node's to publish,
 * once its member is in the room there (room_enter): published here, it
 * could come to that node on its other connection, and an answer to it
 * after it, before this script's answer had put the member in. */
const char rbus_lua_join[] =
	"local r='bulwark:room:'..ARGV[1] "
	"local v=redis.call('HMGET',r,'salt','hash') "
	"if v[1]~=ARGV[7] or v[2]~=ARGV[8] then return -1 end "
	"if redis.call('HLEN',r..':m')>=tonumber(ARGV[5]) then return -2 end "
	"if redis.call('HSETNX',r..':n',ARGV[3],ARGV[2])==0 then return 0 end "
	"redis.call('HSET',r..':m',ARGV[2],ARGV[3]..'\\n'..ARGV[4]) "
	"redis.call('HINCRBY','bulwark:node:'..ARGV[6]..':in',ARGV[1],1) "
	"redis.call('INCR','bulwark:members') "
	"return 1";

/* One member fewer of node in room id: its count in the node's :in. */
#define LUA_UNCOUNT                                                            \
	"local function uncount(node,id) "                                     \
	"local k='bulwark:node:'..node..':in' "                                \
	"if redis.call('HINCRBY',k,id,-1)<=0 then redis.call('HDEL',k,id) "    \
	"end end "

/* ARGV: id, member, notice ("": none) */
const char rbus_lua_leave[] = LUA_UNCOUNT
	"local r='bulwark:room:'..ARGV[1] "
	"local v=redis.call('HGET',r..':m',ARGV[2]) "
	"if not v then return -1 end "
	"redis.call('HDEL',r..':m',ARGV[2]) "
	"redis.call('DECR','bulwark:members') "
	"local node=string.match(ARGV[2],'^(.+)/%d+$') "
	"if node then uncount(node,ARGV[1]) end "
	"local k=string.sub(v,1,string.find(v,'\\n',1,true)-1) "
	"if redis.call('HGET',r..':n',k)==ARGV[2] then "
	"redis.call('HDEL',r..':n',k) end "
	"if ARGV[3]~='' then redis.call('PUBLISH',r,ARGV[2]..'\\n'..ARGV[3]) "
	"end "
	"if redis.call('HLEN',r..':m')==0 then "
	"redis.call('DEL',r,r..':m',r..':n') "
	"redis.call('SREM','bulwark:rooms',ARGV[1]) end "
	"return 0";

/* The members of node out of their rooms, with notice ("" for none),
 * empty rooms deleted: step(node, notice, cursor, budget) goes through
 * the node's :in from cursor until budget (members looked at) is spent,
 * and returns the cursor to go on from ("0": done) and what is left of
 * the budget. A room taken is taken whole. */
#define LUA_DROP_STEP                                                          \
	"local function drop_room(node,id,notice) "                            \
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
	"redis.call('SREM','bulwark:rooms',id) end "                           \
	"return 1+#m/2 end "                                                   \
	"local function step(node,notice,c,budget) "                           \
	"local k='bulwark:node:'..node..':in' "                                \
	"repeat "                                                              \
	"local s=redis.call('HSCAN',k,c,'COUNT',16) c=s[1] "                   \
	"for i=1,#s[2],2 do "                                                  \
	"budget=budget-drop_room(node,s[2][i],notice) "                        \
	"redis.call('HDEL',k,s[2][i]) end "                                    \
	"until c=='0' or budget<=0 "                                           \
	"return c,budget end "

/* ARGV: self, notice, budget. Every other node that stopped beating is
 * taken for dead (out of bulwark:nodes: when it beats again it learns it,
 * and writes its members again) and reaped, a budget's worth a call.
 * Nothing is judged by a node whose own heartbeat Redis does not hold
 * (a full Redis refuses every node's beat, and each would reap the
 * others): -1. Else {nodes reaped, nodes still being reaped}. */
const char rbus_lua_reap[] = LUA_DROP_STEP
	"if redis.call('EXISTS','bulwark:node:'..ARGV[1])==0 then return -1 "
	"end "
	"for _,node in ipairs(redis.call('SMEMBERS','bulwark:nodes')) do "
	"if node~=ARGV[1] and "
	"redis.call('EXISTS','bulwark:node:'..node)==0 then "
	"redis.call('SREM','bulwark:nodes',node) "
	"redis.call('SADD','bulwark:reaping',node) end end "
	"local budget,n=tonumber(ARGV[3]),0 "
	"for _,node in ipairs(redis.call('SMEMBERS','bulwark:reaping')) do "
	"local ck='bulwark:node:'..node..':reap' "
	"if redis.call('EXISTS','bulwark:node:'..node)==1 then "
	"redis.call('SREM','bulwark:reaping',node) redis.call('DEL',ck) "
	"elseif budget>0 then "
	"local c c,budget=step(node,ARGV[2],redis.call('GET',ck) or '0',"
	"budget) "
	"if c=='0' then redis.call('SREM','bulwark:reaping',node) "
	"redis.call('DEL',ck,'bulwark:node:'..node..':in',"
	"'bulwark:node:'..node..':rooms') n=n+1 "
	"else redis.call('SET',ck,c) end end end "
	"return {n,redis.call('SCARD','bulwark:reaping')}";

/* ARGV: self, milliseconds to live. This node's heartbeat: 0 if it had
 * been reaped (taken out of bulwark:nodes, its members with it) while it
 * still ran (a pause of its own, or of Redis): then it writes its members
 * again. 1 otherwise (a key that lapsed unreaped has lost nothing). */
const char rbus_lua_beat[] =
	"local was=redis.call('SISMEMBER','bulwark:nodes',ARGV[1]) "
	"redis.call('SET','bulwark:node:'..ARGV[1],'1','PX',ARGV[2]) "
	"redis.call('SADD','bulwark:nodes',ARGV[1]) "
	"return was";

/* ARGV: self, notice, cursor, budget. This node's members, as Redis had
 * them, go (with notice: "" after an outage, when the members it has now
 * are written again after it by lua_rejoin; a leave at start-up, when
 * they are an earlier process's, gone with it), a budget's worth a call:
 * the cursor to go on from, "0" once done. */
const char rbus_lua_forget[] = LUA_DROP_STEP
	"local c=step(ARGV[1],ARGV[2],ARGV[3],tonumber(ARGV[4])) "
	"if c=='0' then redis.call('DEL','bulwark:node:'..ARGV[1]..':rooms') "
	"end "
	"return c";

/* ARGV: an id this node has known: the counter is raised to it (a Redis
 * restarted without its data begins at 0 again). */
const char rbus_lua_floor[] =
	"if tonumber(redis.call('GET','bulwark:rooms:next') or '0')<"
	"tonumber(ARGV[1]) then "
	"redis.call('SET','bulwark:rooms:next',ARGV[1]) end return 0";

/* ARGV: id, salt, hash, member, key, name, node, max members: a member
 * written again (the room too if it went), without a notice; 0 if its
 * name was given to another member meanwhile (the others reaped this node
 * while it was cut off), -2 if the room filled up meanwhile, -3 if the id
 * is another room's now (Redis lost its data, and another node gave the
 * id again before this one wrote its room back). */
const char rbus_lua_rejoin[] =
	"local r='bulwark:room:'..ARGV[1] "
	"if redis.call('EXISTS',r)==0 then "
	"redis.call('HSET',r,'salt',ARGV[2],'hash',ARGV[3]) "
	"redis.call('SADD','bulwark:rooms',ARGV[1]) "
	"else local v=redis.call('HMGET',r,'salt','hash') "
	"if v[1]~=ARGV[2] or v[2]~=ARGV[3] then return -3 end end "
	"local o=redis.call('HGET',r..':n',ARGV[5]) "
	"if o and o~=ARGV[4] then return 0 end "
	"if redis.call('HEXISTS',r..':m',ARGV[4])==0 and "
	"redis.call('HLEN',r..':m')>=tonumber(ARGV[8]) then return -2 end "
	"redis.call('HSET',r..':n',ARGV[5],ARGV[4]) "
	"if redis.call('HSET',r..':m',ARGV[4],ARGV[5]..'\\n'..ARGV[6])==1 then "
	"redis.call('INCR','bulwark:members') "
	"redis.call('HINCRBY','bulwark:node:'..ARGV[7]..':in',ARGV[1],1) end "
	"return 1";

/* ARGV: room id. Its members' "NODE/CONN\nNAME" values, for /who. */
const char rbus_lua_who[] =
	"return redis.call('HVALS','bulwark:room:'..ARGV[1]..':m')";

/* No ARGV. The rooms and members of the whole cluster, for the metrics. */
const char rbus_lua_count[] =
	"return {redis.call('SCARD','bulwark:rooms'),"
	"tonumber(redis.call('GET','bulwark:members') or '0')}";
