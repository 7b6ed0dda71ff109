//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* cgroup/connect6 (routing): as connect4, for IPv6 sockets. A dual-stack
 * socket dialing an IPv4 service passes a v4-mapped address, which is how
 * IPv4 services are keyed, and is sent to a v4-mapped backend: the kernel
 * then connects over IPv4 without running connect4. */
#include "route.h"

char __license[] SEC("license") = "Dual BSD/GPL";

SEC("cgroup/connect6")
int flowplace_route_connect6(struct bpf_sock_addr *ctx)
{
	if (ctx->type != SOCK_STREAM || !ctx->sk)
		return 1;
	struct fp_route_service_key key = { .port = (__be16)ctx->user_port };
	/* ctx fields must be loaded one by one, not through a pointer */
	__u32 a[4] = { ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3] };
	__builtin_memcpy(key.addr, a, 16);
	struct fp_route_sock rs = {};
	struct fp_route_backend *be = rt_choose(&key, &rs);
	if (!be) {
		rt_unrouted(ctx->sk);
		return 1;
	}
	__u32 b[4];
	__builtin_memcpy(b, be->addr, 16);
	ctx->user_ip6[0] = b[0];
	ctx->user_ip6[1] = b[1];
	ctx->user_ip6[2] = b[2];
	ctx->user_ip6[3] = b[3];
	ctx->user_port = be->port;
	__builtin_memcpy(rs.vip, key.addr, 16);
	rs.vip_port = key.port;
	rt_routed(ctx->sk, &rs);
	return 1;
}
