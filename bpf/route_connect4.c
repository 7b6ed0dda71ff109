//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* cgroup/connect4 (routing): a connect to a routed service address goes to
 * the backend rt_choose picks; the socket is remembered so getpeername4 can
 * restore the service address and sock_ops can judge the backend. */
#include "route.h"

char __license[] SEC("license") = "Dual BSD/GPL";

SEC("cgroup/connect4")
int flowplace_route_connect4(struct bpf_sock_addr *ctx)
{
	if (ctx->type != SOCK_STREAM || !ctx->sk)
		return 1;
	struct fp_route_service_key key = { .port = (__be16)ctx->user_port };
	rt_v4_mapped(key.addr, ctx->user_ip4);
	struct fp_route_sock rs = {};
	struct fp_route_backend *be = rt_choose(&key, &rs);
	/* An IPv4 socket can reach IPv4 backends only; userspace never puts
	 * others in an IPv4 service's table. */
	if (!be || be->family != AF_INET) {
		rt_unrouted(ctx->sk);
		return 1;
	}
	__be32 addr;
	__builtin_memcpy(&addr, &be->addr[12], 4);
	ctx->user_ip4 = addr;
	ctx->user_port = be->port;
	__builtin_memcpy(rs.vip, key.addr, 16);
	rs.vip_port = key.port;
	rt_routed(ctx->sk, &rs);
	return 1; /* never refuse a connect */
}
