/* Does a process inside User-Mode Linux keep its vector registers across page faults
 * and system calls? Built on the host and run inside the VM by
 * tests/unit/test_kernel_path.py (see runner.py on why this can fail).
 *
 * One asm block loads known values into ymm0-15 (and, with AVX-512, zmm0-31 and k1-7),
 * then touches PAGES fresh pages (each a page fault: in UML a host SIGSEGV handled by
 * UML's stub) with a getpid() system call after each, then stores the registers again.
 * Prints "FPU-OK ..." and exits 0 when nothing changed, else "FPU-CORRUPT ..." and 1.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>

#define PAGES 64

static unsigned char pattern[32 * 64] __attribute__((aligned(64)));
static unsigned char after[32 * 64] __attribute__((aligned(64)));
static uint64_t kpat[8], kafter[8];

static unsigned char *fresh_pages(void)
{
	void *p = mmap(NULL, PAGES * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	return p == MAP_FAILED ? NULL : p;
}

static void run_avx(unsigned char *pages)
{
	__asm__ volatile(
		"vmovdqu 0(%0), %%ymm0\n\t"    "vmovdqu 64(%0), %%ymm1\n\t"
		"vmovdqu 128(%0), %%ymm2\n\t"  "vmovdqu 192(%0), %%ymm3\n\t"
		"vmovdqu 256(%0), %%ymm4\n\t"  "vmovdqu 320(%0), %%ymm5\n\t"
		"vmovdqu 384(%0), %%ymm6\n\t"  "vmovdqu 448(%0), %%ymm7\n\t"
		"vmovdqu 512(%0), %%ymm8\n\t"  "vmovdqu 576(%0), %%ymm9\n\t"
		"vmovdqu 640(%0), %%ymm10\n\t" "vmovdqu 704(%0), %%ymm11\n\t"
		"vmovdqu 768(%0), %%ymm12\n\t" "vmovdqu 832(%0), %%ymm13\n\t"
		"vmovdqu 896(%0), %%ymm14\n\t" "vmovdqu 960(%0), %%ymm15\n\t"
		"mov %2, %%rdx\n\t"
		"mov $" "64" ", %%r8\n"
		"1:\n\t"
		"movb $1, (%%rdx)\n\t"
		"mov $39, %%eax\n\t"            /* getpid */
		"syscall\n\t"
		"add $4096, %%rdx\n\t"
		"dec %%r8\n\t"
		"jnz 1b\n\t"
		"vmovdqu %%ymm0, 0(%1)\n\t"    "vmovdqu %%ymm1, 64(%1)\n\t"
		"vmovdqu %%ymm2, 128(%1)\n\t"  "vmovdqu %%ymm3, 192(%1)\n\t"
		"vmovdqu %%ymm4, 256(%1)\n\t"  "vmovdqu %%ymm5, 320(%1)\n\t"
		"vmovdqu %%ymm6, 384(%1)\n\t"  "vmovdqu %%ymm7, 448(%1)\n\t"
		"vmovdqu %%ymm8, 512(%1)\n\t"  "vmovdqu %%ymm9, 576(%1)\n\t"
		"vmovdqu %%ymm10, 640(%1)\n\t" "vmovdqu %%ymm11, 704(%1)\n\t"
		"vmovdqu %%ymm12, 768(%1)\n\t" "vmovdqu %%ymm13, 832(%1)\n\t"
		"vmovdqu %%ymm14, 896(%1)\n\t" "vmovdqu %%ymm15, 960(%1)\n\t"
		"vzeroupper\n\t"
		: : "r"(pattern), "r"(after), "r"(pages)
		: "rax", "rcx", "rdx", "r8", "r11", "memory",
		  "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7",
		  "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15");
}

#define Z(i) "vmovdqu64 " #i "*64(%0), %%zmm" #i "\n\t"
#define S(i) "vmovdqu64 %%zmm" #i ", " #i "*64(%1)\n\t"

static void run_avx512(unsigned char *pages)
{
	__asm__ volatile(
		Z(0) Z(1) Z(2) Z(3) Z(4) Z(5) Z(6) Z(7) Z(8) Z(9) Z(10) Z(11) Z(12) Z(13) Z(14) Z(15)
		Z(16) Z(17) Z(18) Z(19) Z(20) Z(21) Z(22) Z(23) Z(24) Z(25) Z(26) Z(27) Z(28) Z(29)
		Z(30) Z(31)
		"kmovq 8(%3), %%k1\n\t" "kmovq 16(%3), %%k2\n\t" "kmovq 24(%3), %%k3\n\t"
		"kmovq 32(%3), %%k4\n\t" "kmovq 40(%3), %%k5\n\t" "kmovq 48(%3), %%k6\n\t"
		"kmovq 56(%3), %%k7\n\t"
		"mov %2, %%rdx\n\t"
		"mov $64, %%r8\n"
		"1:\n\t"
		"movb $1, (%%rdx)\n\t"
		"mov $39, %%eax\n\t"
		"syscall\n\t"
		"add $4096, %%rdx\n\t"
		"dec %%r8\n\t"
		"jnz 1b\n\t"
		S(0) S(1) S(2) S(3) S(4) S(5) S(6) S(7) S(8) S(9) S(10) S(11) S(12) S(13) S(14) S(15)
		S(16) S(17) S(18) S(19) S(20) S(21) S(22) S(23) S(24) S(25) S(26) S(27) S(28) S(29)
		S(30) S(31)
		"kmovq %%k1, 8(%4)\n\t" "kmovq %%k2, 16(%4)\n\t" "kmovq %%k3, 24(%4)\n\t"
		"kmovq %%k4, 32(%4)\n\t" "kmovq %%k5, 40(%4)\n\t" "kmovq %%k6, 48(%4)\n\t"
		"kmovq %%k7, 56(%4)\n\t"
		"vzeroupper\n\t"
		: : "r"(pattern), "r"(after), "r"(pages), "r"(kpat), "r"(kafter)
		: "rax", "rcx", "rdx", "r8", "r11", "memory");
}

static int differs(const char *what, size_t regs, size_t stride, size_t width)
{
	size_t i, bad = 0;

	for (i = 0; i < regs; i++)
		if (memcmp(pattern + i * stride, after + i * stride, width)) {
			if (!bad)
				printf("%s%zu", what, i);
			else
				printf(",%zu", i);
			bad++;
		}
	if (bad)
		printf(" changed; ");
	return bad != 0;
}

int main(void)
{
	unsigned char *pages;
	size_t i;
	int bad = 0, avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");

	if (!__builtin_cpu_supports("avx")) {
		printf("FPU-SKIP no AVX on this CPU\n");
		return 0;
	}
	for (i = 0; i < sizeof(pattern); i++)
		pattern[i] = (unsigned char)(i * 7 + 3);
	for (i = 1; i < 8; i++)
		kpat[i] = 0x0123456789abcdefull * i;

	pages = fresh_pages();
	if (!pages)
		return 2;
	run_avx(pages);
	bad |= differs("ymm", 16, 64, 32);
	if (avx512) {
		pages = fresh_pages();
		if (!pages)
			return 2;
		memset(after, 0, sizeof(after));
		run_avx512(pages);
		bad |= differs("zmm", 32, 64, 64);
		if (memcmp(kpat + 1, kafter + 1, 7 * 8)) {
			printf("opmask changed; ");
			bad = 1;
		}
	}
	printf("%s avx=1 avx512=%d pages=%d\n", bad ? "FPU-CORRUPT" : "FPU-OK", avx512, PAGES);
	return bad;
}
