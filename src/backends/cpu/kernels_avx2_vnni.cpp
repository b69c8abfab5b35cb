// The AVX2 set again, with AVX-VNNI's VEX vpdpbusd for the 8-bit products.
#define EMBER_AVX_VNNI 1
#include "kernels_avx2.cpp"
