/* sysloop N getpid|openat PATH: N syscalls in a tight loop, prints ns per call. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 1000000;
	int openat_mode = argc > 2 && !strcmp(argv[2], "openat");
	const char *path = argc > 3 ? argv[3] : "/dev/null";
	struct timespec a, b;

	clock_gettime(CLOCK_MONOTONIC, &a);
	for (long i = 0; i < n; i++) {
		if (openat_mode) {
			int fd = syscall(SYS_openat, AT_FDCWD, path, O_RDONLY);
			if (fd >= 0)
				close(fd);
		} else {
			syscall(SYS_getpid);
		}
	}
	clock_gettime(CLOCK_MONOTONIC, &b);
	printf("%.1f\n", ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / n);
	return 0;
}
