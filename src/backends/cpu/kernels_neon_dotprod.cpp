// The NEON set again, with the dot-product extension's sdot for the 8-bit products.
#define EMBER_NEON_DOTPROD 1
#include "kernels_neon.cpp"
