//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* cgroup/getpeername4 (routing): a routed socket reports the service address
 * the application dialed, as if it were connected to the service itself. */
#include "route.h"

char __license[] SEC("license") = "Dual BSD/GPL";

SEC("cgroup/getpeername4")
int flowplace_route_getpeername4(struct bpf_sock_addr *ctx)
{
	struct fp_route_sock *rs = route_sock_of(ctx->sk);
	if (!rs)
		return 1;
	__be32 addr;
	__builtin_memcpy(&addr, &rs->vip[12], 4);
	ctx->user_ip4 = addr;
	ctx->user_port = rs->vip_port;
	return 1;
}
