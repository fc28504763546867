/* What the metrics service's files share. */
#ifndef BULWARK_METRICS_INT_H
#define BULWARK_METRICS_INT_H

#include "bulwark/buf.h"

/* The process_* families (CPU, memory, descriptors, start time) into b:
 * 0, or nonzero if b could not take them. */
int metrics_process(struct bw_buf *b, long long started_s);

#endif
