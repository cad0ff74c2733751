/*
 * The device host's marks of its event loop's waits in its liveness page; see loop_marks.c.
 */
#ifndef VFIO_USERD_LOOP_MARKS_H
#define VFIO_USERD_LOOP_MARKS_H

#include "liveness.h"

/* From now on, the calling thread's waits (it runs the loop) are marked in `slot`. */
void loop_marks_start(struct liveness_slot *slot);

#endif /* VFIO_USERD_LOOP_MARKS_H */
