/* An Override target: vigil_check(n) counts its runs and returns n * 2; main calls it
 * for each argument and prints what came back and how many calls ran the function. A
 * uprobe Override at vigil_check's entry skips the function: the caller gets argError
 * and the run count does not move. */
#include <stdio.h>
#include <stdlib.h>

static volatile int runs;

__attribute__((noinline)) long vigil_check(long n)
{
	runs++;
	__asm__ volatile("" ::: "memory");
	return n * 2;
}

int main(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		long r = vigil_check(atol(argv[i]));

		printf("%s=%ld runs=%d\n", argv[i], r, runs);
	}
	return 0;
}
