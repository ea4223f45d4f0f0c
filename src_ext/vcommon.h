/* What the C sources of the kernels share. */
#ifndef FASTBP_VCOMMON_H
#define FASTBP_VCOMMON_H

/* The C helpers are linked into each kernel variant: not exported from the module. */
#if defined(__GNUC__) || defined(__clang__)
#define FASTBP_HIDDEN __attribute__((visibility("hidden")))
#else
#define FASTBP_HIDDEN
#endif

#endif
