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
 * current XSAVE area, lay UML's bytes over its beginning (legacy area, header, AVX,
 * AVX-512 and PKRU all lie in the first 2696 bytes), keep the current state of the
 * components beyond (AMX tile config/data: a UML process cannot ask for AMX permission, so
 * they are always in their initial state), and write the whole area back. Everything else
 * goes to the real ptrace() unchanged. Built at test time by tests/kernel/runner.py.
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
#define BIG 65536              /* larger than any XSAVE area so far */

typedef long (*ptrace_fn)(int, pid_t, void *, void *);

static ptrace_fn real_ptrace;
static unsigned char whole[BIG];   /* UML's tracer is single-threaded */

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

		if (r == 0 && uml->iov_len < cur.iov_len && uml->iov_len > XSTATE_BV_OFFSET + 8) {
			uint64_t cur_bv, uml_bv, user, low = 3; /* x87, SSE: legacy area */
			size_t n = uml->iov_len;
			unsigned int i, eax, ebx, ecx, edx;

			__get_cpuid_count(0xd, 0, &eax, &ebx, &ecx, &edx);
			user = eax | ((uint64_t)edx << 32);  /* user components the CPU has */

			/* XSTATE_BV bits of the components that lie wholly inside UML's buffer
			 * come from UML, the others' from the current state. Standard format:
			 * component i >= 2 has size CPUID(0xD, i).EAX at offset .EBX. */
			for (i = 2; i < 64; i++) {
				if (!(user >> i & 1) || !__get_cpuid_count(0xd, i, &eax, &ebx, &ecx, &edx))
					continue;
				if ((size_t)ebx + eax <= n)
					low |= 1ull << i;
			}
			memcpy(&cur_bv, whole + XSTATE_BV_OFFSET, 8);
			memcpy(&uml_bv, (unsigned char *)uml->iov_base + XSTATE_BV_OFFSET, 8);
			memcpy(whole, uml->iov_base, n);
			uml_bv = (uml_bv & low) | (cur_bv & ~low);
			memcpy(whole + XSTATE_BV_OFFSET, &uml_bv, 8);
			return real_ptrace(PTRACE_SETREGSET, pid, addr, &cur);
		}
	}
	return real_ptrace(request, pid, addr, data);
}
