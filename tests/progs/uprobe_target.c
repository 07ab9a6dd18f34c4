/* A uprobe target: calls vigil_target(n, s) for each argument, then exits. */
#include <stdio.h>
#include <stdlib.h>

__attribute__((noinline)) int vigil_target(int n, const char *s)
{
	__asm__ volatile("" ::: "memory");
	return n + (s ? s[0] : 0);
}

int main(int argc, char **argv)
{
	int acc = 0;

	for (int i = 1; i < argc; i++)
		acc += vigil_target(i * 10, argv[i]);
	return acc == -1;
}
