/*
 * Stands in for the test programs Tetragon's USDT example policies name: probe
 * test:usdt3 (an int32 and an int64) and probe tetragon:test_4B (three int32 in memory,
 * printed after the probe, so a Set action shows). Built with -O0: memory operands.
 */
#include <stdio.h>
#include <sys/sdt.h>

int main(void)
{
	int a = 1, b = 2, c = 3, n = 42;
	long l = 1234567890123L;

	STAP_PROBE2(test, usdt3, n, l);
	STAP_PROBE3(tetragon, test_4B, a, b, c);
	printf("%d %d %d\n", a, b, c);
	return 0;
}
