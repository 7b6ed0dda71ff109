// Package bpf holds flowplace's eBPF programs and their generated loaders.
//
// Each program is one small C file. The measurement objects share the maps
// declared in flow.h, the routing objects (route_*.c) those in route.h; the
// loaders create them once and pass them to every object. route_socks.h is
// shared by both: routing's pinned map of the sockets it redirected.
// Regenerate with `make generate` (needs clang, llvm, libbpf-dev, bpftool).
package bpf

//go:generate sh -c "bpftool btf dump file /sys/kernel/btf/vmlinux format c > include/vmlinux.h"
//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -mcpu=v3" -target bpfel -type fp_flow_key -type fp_flow_stats -type fp_conn_state -type fp_redirect_key Sockops sockops.c -- -I./include
//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -mcpu=v3" -target bpfel Connect4 connect4.c -- -I./include
//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -mcpu=v3" -target bpfel Connect6 connect6.c -- -I./include
//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -mcpu=v3" -target bpfel -type fp_adopt_record -type fp_adopt_status Adopt adopt.c -- -I./include
//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -mcpu=v3" -target bpfel -type fp_route_service_key -type fp_route_service -type fp_route_slot_key -type fp_route_slot -type fp_route_backend -type fp_route_health -type fp_route_stats_key -type fp_route_stats -type fp_route_config -type fp_route_sock RouteConnect4 route_connect4.c -- -I./include
//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -mcpu=v3" -target bpfel RouteConnect6 route_connect6.c -- -I./include
//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -mcpu=v3" -target bpfel RouteGetpeername4 route_getpeername4.c -- -I./include
//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -mcpu=v3" -target bpfel RouteGetpeername6 route_getpeername6.c -- -I./include
//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -mcpu=v3" -target bpfel RouteSockops route_sockops.c -- -I./include
//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -mcpu=v3" -target bpfel -type fp_route_pair RouteDestroy route_destroy.c -- -I./include
