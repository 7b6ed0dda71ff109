//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* cgroup/connect4: remember the address the application dialed, so traffic
 * is attributed to the service it asked for. Routing's connect4 may run
 * before this one (attach order decides); it then left the service address
 * in route_socks. */
#include "flow.h"
#include "route_socks.h"

char __license[] SEC("license") = "Dual BSD/GPL";

SEC("cgroup/connect4")
int flowplace_connect4(struct bpf_sock_addr *ctx)
{
	if (ctx->type != SOCK_STREAM)
		return 1;
	struct fp_conn_state cs = {};
	v4_mapped(cs.dialed_addr, ctx->user_ip4);
	cs.dialed_port = bpf_ntohs((__be16)ctx->user_port);
	cs.dialed = 1;

	struct fp_route_sock *rs = route_sock_of(ctx->sk);
	if (rs) {
		__builtin_memcpy(cs.dialed_addr, rs->vip, 16);
		cs.dialed_port = bpf_ntohs(rs->vip_port);
		cs.redirected = 1;
		count(CNT_REDIRECTED);
	}
	/* A fresh state per connect: a retried connect starts over. */
	struct fp_conn_state *st = conn_of(ctx->sk, 1);
	if (st)
		*st = cs;
	else
		count(CNT_STORAGE_FAILED);
	return 1; /* never refuse a connect */
}
