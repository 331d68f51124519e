/* LD_PRELOAD shim for Debian's linux.uml (6.1) on hosts whose XSAVE area is larger than
 * UML's fixed 2696-byte FPU buffer (CPUs with AMX: 11008 bytes).
 *
 * UML saves and restores its processes' FPU state with
 * ptrace(PTRACE_GETREGSET / PTRACE_SETREGSET, pid, NT_X86_XSTATE, {buf, 2696}).
 * GETREGSET truncates quietly, but the host kernel refuses SETREGSET unless the buffer is
 * exactly its whole user XSAVE size (-EFAULT, arch/x86/kernel/fpu/regset.c), so UML dies
 * at the first switch to userspace ("ptrace set fp regs failed, errno = 14").
 *
 * Here SETREGSET of NT_X86_XSTATE with a short buffer becomes: read the tracee's whole
 * current XSAVE area, take the legacy area, the XSAVE header and every component lying
 * wholly inside UML's buffer from UML (x87, SSE, AVX, AVX-512 and PKRU end at 2696; the
 * layout comes from CPUID leaf 0xD), keep the current state of the others (AMX tile
 * config/data: a UML process cannot get AMX permission, so they stay in their initial
 * state), and write the whole area back. Everything else goes to the real ptrace()
 * unchanged. Built at test time by tests/kernel/runner.py.
 */
#define _GNU_SOURCE
#include <cpuid.h>
#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>
#include <sys/uio.h>

/* not <sys/ptrace.h>: its prototype takes an enum */
#define PTRACE_GETREGSET 0x4204
#define PTRACE_SETREGSET 0x4205
#define NT_X86_XSTATE 0x202
#define XSTATE_BV_OFFSET 512   /* XSAVE header: XSTATE_BV (u64), then XCOMP_BV */
#define XSAVE_HDR_END 576      /* legacy area (512) + XSAVE header (64) */
#define BIG 65536              /* larger than any XSAVE area so far */

typedef long (*ptrace_fn)(int, pid_t, void *, void *);

static ptrace_fn real_ptrace;
static unsigned char whole[BIG];   /* UML's tracer is single-threaded */

/* user XSAVE components >= 2 the CPU has: offset and size in the standard format */
static int ncomp = -1;
static unsigned int comp_bit[64], comp_off[64], comp_size[64];

static void read_layout(void)
{
	unsigned int i, eax = 0, ebx = 0, ecx = 0, edx = 0;
	uint64_t user;

	ncomp = 0;
	if (!__get_cpuid_count(0xd, 0, &eax, &ebx, &ecx, &edx))
		return;
	user = eax | ((uint64_t)edx << 32);
	for (i = 2; i < 64; i++) {
		if (!(user >> i & 1) || !__get_cpuid_count(0xd, i, &eax, &ebx, &ecx, &edx) || !eax)
			continue;
		comp_bit[ncomp] = i;
		comp_off[ncomp] = ebx;
		comp_size[ncomp] = eax;
		ncomp++;
	}
}

long ptrace(int request, ...)
{
	va_list ap;
	pid_t pid;
	void *addr, *data;

	va_start(ap, request);
	pid = va_arg(ap, pid_t);
	addr = va_arg(ap, void *);
	data = va_arg(ap, void *);
	va_end(ap);
	if (!real_ptrace)
		real_ptrace = (ptrace_fn)dlsym(RTLD_NEXT, "ptrace");

	if (request == PTRACE_SETREGSET && (uintptr_t)addr == NT_X86_XSTATE && data) {
		struct iovec *uml = data;
		struct iovec cur = { whole, sizeof(whole) };
		long r = real_ptrace(PTRACE_GETREGSET, pid, addr, &cur);

		if (r == 0 && uml->iov_len < cur.iov_len && uml->iov_len >= XSAVE_HDR_END) {
			const unsigned char *src = uml->iov_base;
			uint64_t cur_bv, uml_bv, mine = 3; /* x87, SSE: the legacy area */
			int i;

			if (ncomp < 0)
				read_layout();
			/* legacy area and XSAVE header from UML; then every component lying wholly
			 * inside UML's buffer, with its XSTATE_BV bit; the others stay as they are */
			memcpy(&cur_bv, whole + XSTATE_BV_OFFSET, 8);
			memcpy(whole, src, XSAVE_HDR_END);
			for (i = 0; i < ncomp; i++) {
				if ((size_t)comp_off[i] + comp_size[i] > uml->iov_len)
					continue;
				memcpy(whole + comp_off[i], src + comp_off[i], comp_size[i]);
				mine |= 1ull << comp_bit[i];
			}
			memcpy(&uml_bv, src + XSTATE_BV_OFFSET, 8);
			uml_bv = (uml_bv & mine) | (cur_bv & ~mine);
			memcpy(whole + XSTATE_BV_OFFSET, &uml_bv, 8);
			return real_ptrace(PTRACE_SETREGSET, pid, addr, &cur);
		}
	}
	return real_ptrace(request, pid, addr, data);
}
