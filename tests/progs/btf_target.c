/* A uprobe and USDT target with structs, built with -gbtf: vigil_resolve_target gets a
 * pointer to a struct holding a pointer to another, and so does the USDT probe
 * vigil:resolve; `resolve` reads through both in user memory. */
#include <sys/sdt.h>

struct vigil_inner {
	int x;
	long y;
	const char *name;
};

struct vigil_outer {
	int a;
	struct vigil_inner *in;
};

__attribute__((noinline)) int vigil_resolve_target(struct vigil_outer *o)
{
	__asm__ volatile("" ::: "memory");
	return o->a + (int)o->in->y + o->in->name[0];
}

int main(int argc, char **argv)
{
	struct vigil_inner i = {7, -11000000000L, argv[0]};
	struct vigil_outer o = {argc, &i};

	STAP_PROBE1(vigil, resolve, &o);
	return vigil_resolve_target(&o) == 99;
}
