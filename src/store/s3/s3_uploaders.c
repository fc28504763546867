/* The S3 backend's uploader threads: they send the parts writers queue
 * (s3_parts.c), punch each sent part out of its spool, and finish the
 * objects given up while parts were in flight, so that neither the loop
 * nor a writer waits for an abort.
 */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>

#include "store/s3/s3_int.h"

static void
run_job(struct s3 *s, struct s3_job *j)
{
	struct bw_blob_w *w = j->w;
	char etag[S3_ETAG_CAP];
	int rc = 0, skip, last;

	if (j->number == 0) { /* an abort */
		s3_w_abort_upload(s, w);
		s3_w_free(w);
		free(j);
		return;
	}
	pthread_mutex_lock(&w->mu);
	skip = w->aborted || w->err != 0;
	pthread_mutex_unlock(&w->mu);
	if (!skip) {
		rc = s3_send_part(s, w, j->number, j->off, j->len, j->sha,
				  etag);
		/* the part is S3's now: its spool space goes */
		if (rc == 0)
			(void)fallocate(w->fd,
					FALLOC_FL_PUNCH_HOLE |
						FALLOC_FL_KEEP_SIZE,
					(off_t)j->off, (off_t)j->len);
	}
	pthread_mutex_lock(&w->mu);
	if (rc == 0 && !skip)
		memcpy(w->etag[j->number - 1], etag, S3_ETAG_CAP);
	else if (rc != 0 && w->err == 0)
		w->err = rc;
	w->queued--;
	last = w->aborted && w->queued == 0;
	pthread_cond_broadcast(&w->cv);
	pthread_mutex_unlock(&w->mu);
	free(j);
	if (last) {
		s3_w_abort_upload(s, w);
		s3_w_free(w);
	}
}

static void *
uploader(void *arg)
{
	struct s3 *s = arg;
	struct s3_job *j;

	for (;;) {
		pthread_mutex_lock(&s->mu);
		while (s->head == NULL && !s->stopping)
			pthread_cond_wait(&s->work, &s->mu);
		if ((j = s->head) == NULL) {
			pthread_mutex_unlock(&s->mu);
			return NULL;
		}
		s->head = j->next;
		if (s->head == NULL)
			s->tail = NULL;
		pthread_mutex_unlock(&s->mu);
		run_job(s, j);
	}
}

void
s3_enqueue(struct s3 *s, struct s3_job *j)
{
	pthread_mutex_lock(&s->mu);
	j->next = NULL;
	if (s->tail != NULL)
		s->tail->next = j;
	else
		s->head = j;
	s->tail = j;
	pthread_cond_signal(&s->work);
	pthread_mutex_unlock(&s->mu);
}

int
s3_uploaders_start(struct s3 *s)
{
	int rc;

	for (s->n_th = 0; s->n_th < S3_UPLOADERS; s->n_th++) {
		if ((rc = pthread_create(&s->th[s->n_th], NULL, uploader, s)) !=
		    0) {
			s3_uploaders_stop(s);
			return -rc;
		}
	}
	return 0;
}

/* The queue is run to its end first: aborts still go to S3. */
void
s3_uploaders_stop(struct s3 *s)
{
	unsigned i;

	pthread_mutex_lock(&s->mu);
	s->stopping = 1;
	pthread_cond_broadcast(&s->work);
	pthread_mutex_unlock(&s->mu);
	for (i = 0; i < s->n_th; i++)
		pthread_join(s->th[i], NULL);
	s->n_th = 0;
}
