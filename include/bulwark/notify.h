/* The service manager's readiness protocol (sd_notify(3)), without
 * libsystemd: a datagram of "KEY=VALUE" lines to the socket NOTIFY_SOCKET
 * names, when it names one. Under systemd's Type=notify the unit is
 * "active" once READY=1 arrives (every listener bound), "reloading" from
 * RELOADING=1 until the next READY=1, and STATUS= shows in
 * `systemctl status`.
 */
#ifndef BULWARK_NOTIFY_H
#define BULWARK_NOTIFY_H

/* Sends state (e.g. "READY=1\nSTATUS=serving"): 1 if sent, 0 if no
 * manager asked for it (no NOTIFY_SOCKET), -errno if it could not be
 * sent. Never blocks. */
int bw_notify(const char *state);
/* bw_notify of a formatted state */
int bw_notifyf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
