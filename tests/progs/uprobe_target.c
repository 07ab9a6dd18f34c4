/* A uprobe target: calls vigil_target(n, s) and vigil_name(s) for each argument, then exits. */
#include <stdio.h>
#include <stdlib.h>

__attribute__((noinline)) int vigil_target(int n, const char *s)
{
	__asm__ volatile("" ::: "memory");
	return n + (s ? s[0] : 0);
}

/* Returns a string, like readline(): the argument with its first character skipped. */
__attribute__((noinline)) const char *vigil_name(const char *s)
{
	__asm__ volatile("" ::: "memory");
	return s[0] ? s + 1 : s;
}

int main(int argc, char **argv)
{
	int acc = 0;

	for (int i = 1; i < argc; i++)
		acc += vigil_target(i * 10, argv[i]) + (vigil_name(argv[i])[0] == '!');
	return acc == -1;
}
