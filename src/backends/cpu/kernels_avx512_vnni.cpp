// The AVX-512 set again, with VNNI's vpdpwssd for the 16-bit products.
#define EMBER_AVX512_VNNI 1
#include "kernels_avx512.cpp"
