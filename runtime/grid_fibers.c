/* The grid emulator's GPU threads as fibers (runtime/grid_emulator.py): one block's threads take
   turns on the calling OS thread, switching (ucontext) only where one waits at a barrier, a warp
   shuffle or a tensor-core product. The emulated module's barrier code is the same as with real
   threads: its pthread calls resolve here instead (a mutex is nothing to take when fibers only
   switch at a wait; waiting on the condition is giving the turn to the next fiber; the waiter
   re-checks the barrier's generation when its turn comes back). Each OS thread runs its own
   fibers (the state is thread-local), so launches from several Python threads do not mix. */
#include <stdint.h>
#include <stdlib.h>
#include <ucontext.h>

typedef void (*driver_fn)(void *argv, int32_t blocks);

typedef struct {
    ucontext_t context;
    void *thread_context; /* the emulated thread's special registers, barriers, exchange array */
    int done;
    void *stack;
} Fiber;

static __thread ucontext_t scheduler;
static __thread Fiber *fibers;
static __thread int current = -1;
static __thread void *outside_context; /* the context of a launch that runs without fibers */
static __thread driver_fn running_driver;
static __thread void *running_argv;
static __thread int32_t running_blocks;

void *ember_grid_context(uint32_t key) { return current >= 0 ? fibers[current].thread_context : outside_context; }
void ember_grid_set_context(void *context) { outside_context = context; }
int ember_grid_nothing(void *anything) { return 0; }

int ember_grid_yield(void *condition, void *mutex) {
    if (current >= 0) swapcontext(&fibers[current].context, &scheduler);
    return 0;
}

static void fiber_main(void) {
    running_driver(running_argv, running_blocks);
    fibers[current].done = 1; /* returns to the scheduler (uc_link) */
}

/* Run `threads` fibers, each `driver(argv, blocks)` with thread context number t at
   contexts + t * context_bytes; returns 0, or -1 when memory runs out. */
int ember_grid_run(driver_fn driver, void *argv, int32_t blocks, int32_t threads, char *contexts,
                   int64_t context_bytes, int64_t stack_bytes) {
    Fiber *made = calloc((size_t)threads, sizeof(Fiber));
    if (made == NULL) return -1;
    for (int32_t t = 0; t < threads; t++) {
        made[t].stack = malloc((size_t)stack_bytes);
        if (made[t].stack == NULL || getcontext(&made[t].context) != 0) {
            for (int32_t k = 0; k <= t; k++) free(made[k].stack);
            free(made);
            return -1;
        }
        made[t].context.uc_stack.ss_sp = made[t].stack;
        made[t].context.uc_stack.ss_size = (size_t)stack_bytes;
        made[t].context.uc_link = &scheduler;
        made[t].thread_context = contexts + t * context_bytes;
        makecontext(&made[t].context, fiber_main, 0);
    }
    Fiber *outer_fibers = fibers;
    int outer_current = current;
    fibers = made, running_driver = driver, running_argv = argv, running_blocks = blocks;
    for (int32_t remaining = threads; remaining > 0;) {
        for (int32_t t = 0; t < threads; t++) {
            if (made[t].done) continue;
            current = t;
            swapcontext(&scheduler, &made[t].context);
            if (made[t].done) remaining--;
        }
    }
    fibers = outer_fibers, current = outer_current;
    for (int32_t t = 0; t < threads; t++) free(made[t].stack);
    free(made);
    return 0;
}
