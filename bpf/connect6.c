//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* cgroup/connect6: remember the IPv6 address the application dialed (for a
 * dual-stack socket dialing IPv4, the v4-mapped address), as connect4 does. */
#include "flow.h"
#include "route_socks.h"

char __license[] SEC("license") = "Dual BSD/GPL";

SEC("cgroup/connect6")
int flowplace_connect6(struct bpf_sock_addr *ctx)
{
	if (ctx->type != SOCK_STREAM)
		return 1;
	struct fp_conn_state cs = {};
	/* ctx fields must be loaded one by one, not through a pointer */
	__u32 a[4] = { ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3] };
	__builtin_memcpy(cs.dialed_addr, a, 16);
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
	return 1;
}
