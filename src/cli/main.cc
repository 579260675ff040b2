// scalebert command-line entry point (placeholder until the CLI commands land in this session).
#include <cstdio>
int main() { std::puts("scalebert"); return 0; }
