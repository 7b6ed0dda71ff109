//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* sock_ops: per-connection RTT, bytes, segments and retransmits, folded into
 * per-flow aggregates. Runs on established, on every RTT sample and on state
 * changes; never per packet. */
#include "flow_agg.h"

char __license[] SEC("license") = "Dual BSD/GPL";

#define TCP_ESTABLISHED_ 1
#define TCP_FIN_WAIT1_ 4
#define TCP_FIN_WAIT2_ 5
#define TCP_CLOSE_ 7
#define TCP_LAST_ACK_ 9
#define TCP_CLOSING_ 11

static __always_inline void fill_key(struct bpf_sock_ops *skops, struct fp_conn_state *cs, __u8 role)
{
	struct fp_flow_key *k = &cs->key;
	struct bpf_sock *sk = skops->sk;

	k->family = skops->family;
	k->netns_cookie = bpf_get_netns_cookie(skops);
	if (sk) {
		struct sock *s = (struct sock *)bpf_skc_to_tcp_sock(sk);
		if (s)
			k->cgroup_id = BPF_CORE_READ(s, sk_cgrp_data.cgroup, kn, id);
	}
	if (skops->family == AF_INET) {
		v4_mapped(k->local_addr, skops->local_ip4);
		v4_mapped(k->peer_addr, skops->remote_ip4);
	} else {
		/* ctx fields must be loaded one by one, not through a pointer */
		__u32 l[4] = { skops->local_ip6[0], skops->local_ip6[1], skops->local_ip6[2], skops->local_ip6[3] };
		__u32 r[4] = { skops->remote_ip6[0], skops->remote_ip6[1], skops->remote_ip6[2], skops->remote_ip6[3] };
		__builtin_memcpy(k->local_addr, l, 16);
		__builtin_memcpy(k->peer_addr, r, 16);
	}
	/* remote_port holds the network-order port in its upper 16 bits. */
	key_ports(cs, role, skops->local_port, bpf_ntohl(skops->remote_port), skops->remote_ip4);
}

static __always_inline void on_established(struct bpf_sock_ops *skops, __u8 role)
{
	/* Accepted sockets (and connects made before connect4 was attached)
	 * have no state yet. */
	struct fp_conn_state *cs = conn_of(skops->sk, 1);
	if (!cs) {
		count(CNT_STORAGE_FAILED);
		return;
	}
	if (cs->tracking)
		return;
	fill_key(skops, cs, role);
	cs->start_ns = bpf_ktime_get_ns();
	cs->last_fold_ns = bpf_ktime_get_coarse_ns();
	/* Baselines: the handshake's SYN counts in bytes_acked, not payload. */
	cs->sent_base = skops->bytes_acked;
	cs->recv_base = skops->bytes_received;
	cs->segs_out_base = skops->segs_out;
	cs->segs_in_base = skops->segs_in;
	cs->retrans_base = skops->total_retrans;
	cs->srtt_us = skops->srtt_us >> 3;
	cs->min_rtt_us = skops->rtt_min;
	cs->tracking = 1;

	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_RTT_CB_FLAG |
						 BPF_SOCK_OPS_STATE_CB_FLAG);

	struct fp_flow_stats *st = flow_get(&cs->key);
	if (st)
		__sync_fetch_and_add(&st->opened, 1);
}

/* A FIN consumes a sequence number, and bytes_acked/bytes_received count it.
 * Both are 0 while ESTABLISHED, the common case, which needs no reads. In a
 * state callback skops->state is still the state being left. */
static __always_inline void fin_seqs(struct bpf_sock_ops *skops, __u64 *fin_in, __u64 *fin_out)
{
	__u32 state = skops->state;
	*fin_in = 0;
	*fin_out = 0;
	if (state == TCP_ESTABLISHED_)
		return;
	struct bpf_sock *sk = skops->sk;
	if (!sk)
		return;
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);
	if (!tp)
		return;
	/* A received FIN sets SOCK_DONE (tcp_fin); a reset does not. */
	struct sock *s = (struct sock *)tp;
	unsigned long flags = BPF_CORE_READ(s, __sk_common.skc_flags);
	if (flags & (1UL << bpf_core_enum_value(enum sock_flags, SOCK_DONE)))
		*fin_in = 1;
	/* Our FIN is queued in these states. Once everything sent is acked
	 * (snd_una == snd_nxt) the FIN is counted as acked; if it was in fact
	 * not sent yet, sent bytes read one low until it is, never high. */
	if ((state == TCP_FIN_WAIT1_ || state == TCP_FIN_WAIT2_ || state == TCP_CLOSING_ ||
	     state == TCP_LAST_ACK_) &&
	    skops->snd_una == skops->snd_nxt)
		*fin_out = 1;
}

/* Fold what the connection moved since the last flush into its aggregate. */
static __always_inline void flush(struct bpf_sock_ops *skops, struct fp_conn_state *cs,
				  struct fp_flow_stats *st)
{
	__u64 fin_in, fin_out;
	fin_seqs(skops, &fin_in, &fin_out);
	__u64 sent = skops->bytes_acked - fin_out;
	__u64 recv = skops->bytes_received - fin_in;
	if (sent > cs->sent_base) {
		__sync_fetch_and_add(&st->bytes_sent, sent - cs->sent_base);
		cs->sent_base = sent;
	}
	if (recv > cs->recv_base) {
		__sync_fetch_and_add(&st->bytes_received, recv - cs->recv_base);
		cs->recv_base = recv;
	}
	__u32 v = skops->segs_out;
	if (v != cs->segs_out_base) {
		__sync_fetch_and_add(&st->segs_out, v - cs->segs_out_base);
		cs->segs_out_base = v;
	}
	v = skops->segs_in;
	if (v != cs->segs_in_base) {
		__sync_fetch_and_add(&st->segs_in, v - cs->segs_in_base);
		cs->segs_in_base = v;
	}
	v = skops->total_retrans;
	if (v != cs->retrans_base) {
		__sync_fetch_and_add(&st->retrans, v - cs->retrans_base);
		cs->retrans_base = v;
	}
}

/* Fold pending RTT samples and the bytes moved since the last fold into the
 * aggregate. */
static __always_inline void fold(struct bpf_sock_ops *skops, struct fp_conn_state *cs,
				 struct fp_flow_stats *st)
{
	__u32 n = cs->pend_n;
#pragma unroll
	for (int i = 0; i < RTT_PENDING; i++) {
		if (i >= n)
			break;
		__u32 b = cs->pend_bucket[i];
		/* The compiler can prove the bound, the verifier cannot. */
		asm volatile("" : "+r"(b));
		if (b < RTT_BUCKETS)
			__sync_fetch_and_add(&st->rtt_hist[b], 1);
	}
	if (n) {
		__sync_fetch_and_add(&st->rtt_sum_us, cs->pend_sum_us);
		__sync_fetch_and_add(&st->rtt_count, n);
		__u32 cur = st->rtt_min_us, m = cs->pend_min_us;
		if (m && (cur == 0 || m < cur))
			__sync_val_compare_and_swap(&st->rtt_min_us, cur, m);
	}
	cs->pend_n = 0;
	cs->pend_sum_us = 0;
	cs->pend_min_us = 0;
	flush(skops, cs, st);
}

static __always_inline void on_rtt(struct bpf_sock_ops *skops)
{
	struct fp_conn_state *cs = conn_of(skops->sk, 0);
	if (!cs || !cs->tracking)
		return;
	/* srtt_us in the context still holds the previous value here; args[1]
	 * is the updated smoothed RTT scaled by 8, args[0] the raw sample. */
	__u32 srtt = skops->args[1] >> 3;
	__u32 mrtt = skops->args[0];
	cs->srtt_us = srtt;
	if (mrtt && (cs->min_rtt_us == 0 || mrtt < cs->min_rtt_us))
		cs->min_rtt_us = mrtt;

	__u32 n = cs->pend_n;
	if (n < RTT_PENDING) {
		cs->pend_bucket[n] = rtt_bucket(srtt);
		cs->pend_sum_us += srtt;
		if (mrtt && (cs->pend_min_us == 0 || mrtt < cs->pend_min_us))
			cs->pend_min_us = mrtt;
		cs->pend_n = ++n;
	}
	__u64 now = bpf_ktime_get_coarse_ns(); /* a fold interval needs no precision */
	if (n < RTT_PENDING && now - cs->last_fold_ns < FOLD_INTERVAL_NS)
		return;
	cs->last_fold_ns = now;
	struct fp_flow_stats *st = flow_get(&cs->key);
	if (st)
		fold(skops, cs, st);
	else
		cs->pend_n = 0; /* counted as an insert failure; do not stall */
}

static __always_inline void on_close(struct bpf_sock_ops *skops)
{
	/* The state stays with the socket until it is freed (a retried
	 * connect starts it afresh). */
	struct fp_conn_state *cs = conn_of(skops->sk, 0);
	if (!cs)
		return;
	if (cs->tracking) {
		cs->tracking = 0;
		struct fp_flow_stats *st = flow_get(&cs->key);
		if (st) {
			fold(skops, cs, st);
			__sync_fetch_and_add(&st->duration_ns, bpf_ktime_get_ns() - cs->start_ns);
			__sync_fetch_and_add(&st->closed, 1);
		}
	}
}

SEC("sockops")
int flowplace_sockops(struct bpf_sock_ops *skops)
{
	switch (skops->op) {
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
		on_established(skops, ROLE_CLIENT);
		break;
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		on_established(skops, ROLE_SERVER);
		break;
	case BPF_SOCK_OPS_RTT_CB:
		on_rtt(skops);
		break;
	case BPF_SOCK_OPS_STATE_CB:
		if (skops->args[1] == TCP_CLOSE_)
			on_close(skops);
		break;
	}
	return 1;
}
