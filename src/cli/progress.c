/* Progress bar for long client work; redrawn at most ten times a second. */
#include <stdio.h>
#include <unistd.h>

#include "bulwark/util.h"
#include "cli/progress.h"

void
bw_progress_start(struct bw_progress *p, const char *label, uint64_t total,
		  int enabled)
{
	p->on = enabled && isatty(STDERR_FILENO);
	p->label = label;
	p->total = total;
	p->done = 0;
	p->start_ms = p->last_ms = bw_now_ms();
}

static void
draw(struct bw_progress *p, uint64_t now)
{
	double secs = (double)(now - p->start_ms) / 1000.0;
	double rate = secs > 0 ? (double)p->done / secs : 0;
	double pct =
		p->total ? 100.0 * (double)p->done / (double)p->total : 100.0;
	unsigned eta =
		rate > 0 ? (unsigned)((double)(p->total - p->done) / rate) : 0;
	char bar[21];
	int i, fill = (int)(pct / 5);

	for (i = 0; i < 20; i++)
		bar[i] = i < fill ? '#' : '.';
	bar[20] = '\0';
	fprintf(stderr,
		"\r%-20.20s [%s] %3.0f%% %8.1f/%.1f MiB %7.1f MiB/s ETA "
		"%u:%02u ",
		p->label, bar, pct, (double)p->done / 1048576.0,
		(double)p->total / 1048576.0, rate / 1048576.0, eta / 60,
		eta % 60);
	fflush(stderr);
}

void
bw_progress_update(struct bw_progress *p, uint64_t done)
{
	uint64_t now;

	p->done = done;
	if (!p->on)
		return;
	now = bw_now_ms();
	if (now - p->last_ms < 100)
		return;
	p->last_ms = now;
	draw(p, now);
}

void
bw_progress_end(struct bw_progress *p)
{
	if (!p->on)
		return;
	draw(p, bw_now_ms());
	fputc('\n', stderr);
}
