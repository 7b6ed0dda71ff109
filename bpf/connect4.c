//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* cgroup/connect4: remember the address the application dialed, before any
 * rewrite, so traffic is attributed to the service it asked for; then apply
 * socket-level service redirection when a redirect is programmed. */
#include "flow.h"

char __license[] SEC("license") = "Dual BSD/GPL";

SEC("cgroup/connect4")
int flowplace_connect4(struct bpf_sock_addr *ctx)
{
	if (ctx->type != SOCK_STREAM)
		return 1;
	__be32 addr = ctx->user_ip4;
	__be16 port = (__be16)ctx->user_port;
	struct fp_conn_state cs = {};
	v4_mapped(cs.dialed_addr, addr);
	cs.dialed_port = bpf_ntohs(port);
	cs.dialed = 1;

	struct fp_redirect_key rk = { .addr = addr, .port = port };
	struct fp_redirect_target *t = bpf_map_lookup_elem(&redirects, &rk);
	if (t) {
		ctx->user_ip4 = t->addr;
		ctx->user_port = t->port;
		cs.redirected = 1;
		count(CNT_REDIRECTED);
	}
	__u64 cookie = bpf_get_socket_cookie(ctx);
	if (bpf_map_update_elem(&conns, &cookie, &cs, BPF_ANY))
		count(CNT_STORAGE_FAILED);
	return 1; /* never refuse a connect */
}
