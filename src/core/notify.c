/* sd_notify(3)'s protocol: one datagram on an AF_UNIX socket, a path or an
 * abstract name ('@' first) as NOTIFY_SOCKET says. A new socket per call:
 * notifications are a handful in a daemon's life (ready, reloading,
 * stopping).
 */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "bulwark/notify.h"

int
bw_notify(const char *state)
{
	const char *path = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sa;
	size_t plen, len = strlen(state);
	socklen_t salen;
	ssize_t n;
	int fd, rc;

	if (path == NULL || path[0] == '\0')
		return 0;
	plen = strlen(path);
	if ((path[0] != '/' && path[0] != '@') || plen >= sizeof(sa.sun_path))
		return -EINVAL;
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	memcpy(sa.sun_path, path, plen);
	if (path[0] == '@')
		sa.sun_path[0] = '\0'; /* an abstract name: no terminator */
	salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen +
			    (path[0] == '/'));
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	do
		n = sendto(fd, state, len, MSG_NOSIGNAL,
			   (const struct sockaddr *)&sa, salen);
	while (n < 0 && errno == EINTR);
	rc = n < 0 ? -errno : (size_t)n == len ? 1 : -EMSGSIZE;
	close(fd);
	return rc;
}

int
bw_notifyf(const char *fmt, ...)
{
	char state[1024];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(state, sizeof(state), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(state))
		return -EMSGSIZE;
	return bw_notify(state);
}
