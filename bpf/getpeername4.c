//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* cgroup/getpeername4: a redirected socket reports the address the
 * application dialed, as if it were connected to the service itself. */
#include "flow.h"

char __license[] SEC("license") = "Dual BSD/GPL";

SEC("cgroup/getpeername4")
int flowplace_getpeername4(struct bpf_sock_addr *ctx)
{
	__u64 cookie = bpf_get_socket_cookie(ctx);
	struct fp_conn_state *cs = bpf_map_lookup_elem(&conns, &cookie);
	if (!cs || !cs->redirected)
		return 1;
	__be32 addr;
	__builtin_memcpy(&addr, &cs->dialed_addr[12], 4);
	ctx->user_ip4 = addr;
	ctx->user_port = bpf_htons(cs->dialed_port);
	return 1;
}
