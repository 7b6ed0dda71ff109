//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* cgroup/getpeername6 (routing): as getpeername4, for IPv6 sockets
 * (including dual-stack sockets routed to an IPv4 service). */
#include "route.h"

char __license[] SEC("license") = "Dual BSD/GPL";

SEC("cgroup/getpeername6")
int flowplace_route_getpeername6(struct bpf_sock_addr *ctx)
{
	struct fp_route_sock *rs = route_sock_of(ctx->sk);
	if (!rs)
		return 1;
	__u32 a[4];
	__builtin_memcpy(a, rs->vip, 16);
	ctx->user_ip6[0] = a[0];
	ctx->user_ip6[1] = a[1];
	ctx->user_ip6[2] = a[2];
	ctx->user_ip6[3] = a[3];
	ctx->user_port = rs->vip_port;
	return 1;
}
