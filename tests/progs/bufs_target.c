/* A uprobe target with two buffers: vigil_two_bufs(a, alen, b, blen) is called once with
 * argv[1] bytes of 'a'..'z' and argv[2] bytes of '0'..'9' (each a repeating pattern). */
#include <stdlib.h>
#include <string.h>

__attribute__((noinline)) int vigil_two_bufs(const char *a, size_t alen, const char *b,
					     size_t blen)
{
	__asm__ volatile("" ::: "memory");
	return (alen ? a[0] : 0) + (blen ? b[blen - 1] : 0);
}

int main(int argc, char **argv)
{
	size_t na = argc > 1 ? strtoul(argv[1], NULL, 10) : 0;
	size_t nb = argc > 2 ? strtoul(argv[2], NULL, 10) : 0;
	char *a = malloc(na + 1), *b = malloc(nb + 1);

	if (!a || !b)
		return 2;
	for (size_t i = 0; i < na; i++)
		a[i] = 'a' + i % 26;
	for (size_t i = 0; i < nb; i++)
		b[i] = '0' + i % 10;
	return vigil_two_bufs(a, na, b, nb) == -1;
}
