//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* iter/tcp (routing): close the routed connections to backends that left
 * their service, so that long-lived clients reconnect, and are routed, to
 * one that is still there. Connect-time balancing pins a connection to its
 * backend; without this a failover would reach new connections only.
 *
 * The loader fills route_doomed with the (service, backend) pairs that
 * ended, keyed by addresses so that a pair outlives the ids of a service or
 * backend already removed from the tables; it opens the
 * iterator in each network namespace of the routed cgroup (iter/tcp walks
 * the namespace it is opened in) and empties route_doomed again. Only
 * sockets that routing redirected are closed. Needs bpf_sock_destroy
 * (Linux 6.5). */
#include "route.h"
#include <bpf/bpf_core_read.h>

char __license[] SEC("license") = "Dual BSD/GPL";

#define TCP_ESTABLISHED_ 1

int bpf_sock_destroy(struct sock_common *sk) __ksym;

struct fp_route_pair {
	__u8 vip[16];
	__u8 backend[16]; /* IPv4 as v4-mapped IPv6, as in the tables */
	__be16 vip_port;
	__be16 backend_port;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct fp_route_pair);
	__type(value, __u8);
} route_doomed SEC(".maps");

SEC("iter/tcp")
int flowplace_route_destroy(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	if (!skc)
		return 0;
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(skc);
	if (!tp)
		return 0; /* TIME_WAIT and request sockets carry no routing state */
	struct fp_route_sock *rs = route_sock_of(tp);
	if (!rs)
		return 0;
	struct fp_route_pair pair = {};
	__builtin_memcpy(pair.vip, rs->vip, 16);
	pair.vip_port = rs->vip_port;
	if (BPF_CORE_READ(skc, skc_family) == AF_INET)
		rt_v4_mapped(pair.backend, BPF_CORE_READ(skc, skc_daddr));
	else
		bpf_core_read(pair.backend, 16, &skc->skc_v6_daddr);
	pair.backend_port = BPF_CORE_READ(skc, skc_dport);
	if (!bpf_map_lookup_elem(&route_doomed, &pair))
		return 0;
	if (bpf_sock_destroy(skc) == 0) {
		__u64 one = 1;
		bpf_seq_write(ctx->meta->seq, &one, sizeof(one));
	}
	return 0;
}
