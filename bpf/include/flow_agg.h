/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Flow aggregation shared by the programs that start tracking a connection:
 * sock_ops (at established) and the adoption iterator (connections that were
 * open before the probes were attached). One definition, so both key and
 * count a connection the same way. */
#pragma once

#include "flow.h"

/* Zero template for new aggregates (too large for the stack). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct fp_flow_stats);
} stats_zero SEC(".maps");

static __always_inline __u32 msb32(__u32 v)
{
	__u32 r = 0;
	if (v >= (1u << 16)) { v >>= 16; r += 16; }
	if (v >= (1u << 8)) { v >>= 8; r += 8; }
	if (v >= (1u << 4)) { v >>= 4; r += 4; }
	if (v >= (1u << 2)) { v >>= 2; r += 2; }
	if (v >= (1u << 1)) { r += 1; }
	return r;
}

static __always_inline __u32 rtt_bucket(__u32 us)
{
	if (us < RTT_SUB)
		return us;
	__u32 e = msb32(us);
	if (e > RTT_MAX_EXP)
		return RTT_BUCKETS - 1;
	return (e - RTT_SUB_BITS + 1) * RTT_SUB + ((us >> (e - RTT_SUB_BITS)) & (RTT_SUB - 1));
}

static __always_inline struct fp_flow_stats *flow_get(struct fp_flow_key *key)
{
	struct fp_flow_stats *st = bpf_map_lookup_elem(&flows, key);
	if (st)
		return st;
	__u32 zero = 0;
	struct fp_flow_stats *tmpl = bpf_map_lookup_elem(&stats_zero, &zero);
	if (!tmpl)
		return 0;
	tmpl->created_ns = bpf_ktime_get_ns();
	long err = bpf_map_update_elem(&flows, key, tmpl, BPF_NOEXIST);
	if (err == 0)
		count(CNT_FLOW_CREATED);
	else if (err != -17 /* EEXIST: another CPU won the race */)
		count(CNT_FLOW_INSERT_FAILED);
	return bpf_map_lookup_elem(&flows, key);
}

/* The role-dependent part of a connection's key; cgroup, netns, family and
 * addresses are already set. Ports in host order; peer4 is the peer's IPv4
 * address (network order) of an AF_INET socket. */
static __always_inline void key_ports(struct fp_conn_state *cs, __u8 role, __u16 lport, __u16 rport,
				      __be32 peer4)
{
	struct fp_flow_key *k = &cs->key;

	k->role = role;
	if (role == ROLE_CLIENT) {
		k->peer_port = rport;
		if (k->family == AF_INET && !cs->redirected) {
			struct fp_redirect_key nk = { .addr = peer4, .port = bpf_htons(rport) };
			if (bpf_map_lookup_elem(&nat_services, &nk))
				k->local_port = lport;
		}
		if (cs->dialed) {
			__builtin_memcpy(k->dialed_addr, cs->dialed_addr, 16);
			k->dialed_port = cs->dialed_port;
		} else {
			__builtin_memcpy(k->dialed_addr, k->peer_addr, 16);
			k->dialed_port = rport;
		}
	} else {
		/* The client dialed this socket's local address (or a VIP that was
		 * translated to it before reaching us). */
		__builtin_memcpy(k->dialed_addr, k->local_addr, 16);
		k->dialed_port = lport;
		k->peer_port = 0;
	}
}
