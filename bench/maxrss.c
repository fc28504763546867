/* maxrss OUTFILE COMMAND [ARG]...: runs COMMAND and writes its peak RSS in
 * KiB to OUTFILE, exiting as COMMAND did. The command is forked from this
 * small process, so the figure is its own: exec folds the peak RSS of the
 * process that forked into the child's, and a benchmark written in Python
 * would otherwise report Python's memory as the client's.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

int
main(int argc, char **argv)
{
	struct rusage ru;
	FILE *f;
	pid_t pid;
	int st;

	if (argc < 3) {
		fprintf(stderr, "usage: maxrss OUTFILE COMMAND [ARG]...\n");
		return 125;
	}
	if ((pid = fork()) < 0)
		return 126;
	if (pid == 0) {
		(void)prctl(PR_SET_PDEATHSIG, SIGKILL); /* die with us */
		execvp(argv[2], argv + 2);
		_exit(127);
	}
	while (wait4(pid, &st, 0, &ru) < 0) {
		if (errno != EINTR)
			return 126;
	}
	if ((f = fopen(argv[1], "w")) != NULL) {
		fprintf(f, "%ld\n", ru.ru_maxrss);
		fclose(f);
	}
	if (WIFEXITED(st))
		return WEXITSTATUS(st);
	if (WIFSIGNALED(st)) {
		signal(WTERMSIG(st), SIG_DFL);
		raise(WTERMSIG(st));
	}
	return 126;
}
