/*
 * assert.h for the NIF build only (the Makefile puts c_src/nif_assert first
 * on the NIF's include path, so the cores' #include <assert.h> finds this).
 *
 * A failed assert in a core linked into the VM must not abort the VM: it
 * calls synod_invariant_failed (c_src/synod_nif_guard.c), which unwinds to
 * the NIF call that reached the core, poisons that instance and raises
 * error({invariant, Where}) in the calling process. The C tests, the
 * fuzzers and the C node use the system's assert.h: there a failed assert
 * still aborts, as it should.
 *
 * Like the system header it has no include guard: it may be included again
 * after NDEBUG changes.
 */
#undef assert
#ifdef NDEBUG
#define assert(e) ((void)0)
#else
void synod_invariant_failed(const char *expr, const char *file, int line) __attribute__((noreturn));
#define assert(e) ((e) ? (void)0 : synod_invariant_failed(#e, __FILE__, __LINE__))
#endif
#ifndef static_assert
#define static_assert _Static_assert
#endif
