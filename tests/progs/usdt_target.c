/*
 * A USDT target: for each argument, fires probe vigil:args (an int, a long, the argument
 * string and a constant), vigil:sem (guarded by its semaphore: it only fires while a
 * tracer holds the semaphore) and vigil:set (an int in memory that a Set action may
 * overwrite), then prints what the semaphore and the int were. Every probe has a
 * semaphore (sdt.h's _SDT_HAS_SEMAPHORES is per file); only vigil:sem checks its own. Built with -O0 so the
 * compiler passes the arguments as memory operands (`-4@-20(%rbp)`).
 */
#define _SDT_HAS_SEMAPHORES 1
#include <stdio.h>
#include <sys/sdt.h>

#define VIGIL_SEMAPHORE(name) \
	__extension__ unsigned short vigil_##name##_semaphore __attribute__((unused)) \
		__attribute__((section(".probes")))
VIGIL_SEMAPHORE(args);
VIGIL_SEMAPHORE(sem);
VIGIL_SEMAPHORE(set);

int main(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		int n = i * 10;
		long big = -1000000000000L * i;
		int v = i;

		STAP_PROBE4(vigil, args, n, big, argv[i], 42);
		if (vigil_sem_semaphore)
			STAP_PROBE1(vigil, sem, n);
		STAP_PROBE1(vigil, set, v);
		printf("sem=%d v=%d\n", vigil_sem_semaphore, v);
	}
	return 0;
}
