// Package cgocost measures what a completion callback into Go would cost (the "callback"
// candidate of the binding's README, "Threading model"): a new C thread calls an empty
// //export Go function n times; the first call binds an M to the thread (Go 1.26 keeps it
// bound), the others reuse it. Also the cost of a Go-to-C call. Run by cgocost_test.go with
// FASTRPC_BENCH=1. Not part of the binding's API.
package cgocost

/*
#include <pthread.h>
#include <stdint.h>
#include <time.h>

extern void cgocostEmpty(uint64_t);

static double cgocost_now_ns(void) {
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

typedef struct { int n; double first_ns, each_ns; } cgocost_run;

static void *cgocost_thread(void *arg) {
	cgocost_run *r = (cgocost_run *)arg;
	double t0 = cgocost_now_ns();
	cgocostEmpty(0);
	r->first_ns = cgocost_now_ns() - t0;
	t0 = cgocost_now_ns();
	for (int i = 1; i <= r->n; i++) cgocostEmpty((uint64_t)i);
	r->each_ns = (cgocost_now_ns() - t0) / r->n;
	return NULL;
}

static int cgocost_measure(int n, double *first, double *each) {
	cgocost_run r = {n, 0, 0};
	pthread_t t;
	if (pthread_create(&t, NULL, cgocost_thread, &r) != 0) return -1;
	pthread_join(t, NULL);
	*first = r.first_ns;
	*each = r.each_ns;
	return 0;
}

static void cgocost_c_empty(uint64_t x) { (void)x; }
*/
import "C"

import (
	"errors"
	"sync/atomic"
	"time"
)

var sink atomic.Uint64

//export cgocostEmpty
func cgocostEmpty(x C.uint64_t) { sink.Add(uint64(x)) }

// Callback runs n callbacks from one new C thread and returns the first one's duration and
// the mean of the others.
func Callback(n int) (first, each time.Duration, err error) {
	var f, e C.double
	if C.cgocost_measure(C.int(n), &f, &e) != 0 {
		return 0, 0, errors.New("pthread_create failed")
	}
	return time.Duration(f), time.Duration(e), nil
}

// GoToC is the mean duration of n calls from Go into an empty C function.
func GoToC(n int) time.Duration {
	t0 := time.Now()
	for i := 0; i < n; i++ {
		C.cgocost_c_empty(C.uint64_t(i))
	}
	return time.Since(t0) / time.Duration(n)
}
