/* bulwark probe: conformance suites for the four protocols, and a recording
 * server for a client under test.
 */
#ifndef BULWARK_CLI_PROBE_H
#define BULWARK_CLI_PROBE_H

int bw_cli_probe(int argc, char **argv);
/* bulwark probe client --listen PORT (probe_client.c). */
int bw_cli_probe_client(int argc, char **argv);

#endif
