// Package bpf holds flowplace's eBPF programs and their generated loaders.
//
// Each program is one small C file; the objects share the maps declared in
// flow.h (the loader creates them once and passes them to every object).
// Regenerate with `make generate` (needs clang, llvm, libbpf-dev, bpftool).
package bpf

//go:generate sh -c "bpftool btf dump file /sys/kernel/btf/vmlinux format c > include/vmlinux.h"
//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -mcpu=v3" -target bpfel -type fp_flow_key -type fp_flow_stats -type fp_conn_state -type fp_redirect_key -type fp_redirect_target Sockops sockops.c -- -I./include
//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -mcpu=v3" -target bpfel Connect4 connect4.c -- -I./include
//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -mcpu=v3" -target bpfel Getpeername4 getpeername4.c -- -I./include
//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -mcpu=v3" -target bpfel Connect6 connect6.c -- -I./include
//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -mcpu=v3" -target bpfel -type fp_adopt_record -type fp_adopt_status Adopt adopt.c -- -I./include
