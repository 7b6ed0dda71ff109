//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* iter/tcp: adopt the TCP connections that were established before the
 * probes were attached, so that long-lived connections (gRPC pools) are
 * measured without waiting for them to reconnect.
 *
 * For each established socket of the observed cgroup subtree that sock_ops
 * does not track yet, the walk records the byte, segment and retransmit
 * counters as the baseline (only what moves afterwards counts), folds the
 * kernel's current smoothed RTT in as one sample, and enables the socket's
 * RTT and state callbacks with bpf_setsockopt(TCP_BPF_SOCK_OPS_CB_FLAGS),
 * which iter/tcp may call because it holds the socket lock. From then on
 * sock_ops measures the connection exactly like one it saw established:
 * an RTT sample per round trip and exact totals at close, for one walk at
 * attach. Re-walking every socket of every namespace each poll instead
 * would cost that walk per poll, give one RTT sample per poll, and lose what
 * a connection moved between its last walk and its close.
 *
 * A connection that routing redirected is attributed to the service address
 * it dialed, which routing keeps in its pinned route_socks.
 *
 * The walk covers the network namespace the iterator was opened in; the
 * loader opens it once per namespace used by the observed processes. It
 * writes one struct fp_adopt_record per socket it visits into the
 * iterator's output. */
#include "flow_agg.h"
#include "route_socks.h"

char __license[] SEC("license") = "Dual BSD/GPL";

#define SOL_TCP_ 6
#define TCP_ESTABLISHED_ 1
#define TCP_LISTEN_ 10

/* The observed cgroup (the one the programs are attached to): its cgroup v2
 * ID, set by the loader. */
volatile const __u64 observed_cgroup_id = 0;

/* Key 0: the walk generation, incremented by the loader before each
 * namespace walk, so that listeners recorded by earlier walks (which may
 * have closed since) are not trusted. A map rather than a global: the
 * loader's memory mapping of a global's section would keep it alive after
 * Close until Go's garbage collector ran. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} walk_gen SEC(".maps");

static __always_inline __u32 current_walk(void)
{
	__u32 zero = 0;
	__u32 *gen = bpf_map_lookup_elem(&walk_gen, &zero);
	return gen ? *gen : 0;
}

enum fp_adopt_status {
	ADOPT_ADOPTED = 1, /* measured from now on */
	ADOPT_TRACKED, /* sock_ops already measures it (or an earlier walk adopted it) */
	ADOPT_OTHER_CGROUP, /* established, but outside the observed subtree */
	ADOPT_NOT_ESTABLISHED, /* listener, handshake, closing, TIME_WAIT */
	ADOPT_NO_STORAGE, /* no per-socket state could be stored */
	ADOPT_NO_CALLBACKS, /* bpf_setsockopt refused; err holds its result */
};

/* One per visited socket. 16 bytes, so a walk's output never overflows the
 * iterator's buffer (a multiple of the page size) in the middle of a record:
 * an overflowing record would make the kernel run the program on the same
 * socket again, which would then report it as tracked. */
struct fp_adopt_record {
	__u64 cookie;
	__s32 err;
	__u8 status;
	__u8 state; /* TCP state of the socket */
	__u8 role;
	__u8 pad;
};

/* Only for bpf2go, which generates Go types from BTF. */
struct fp_adopt_record *unused_adopt_record __attribute__((unused));
enum fp_adopt_status *unused_adopt_status __attribute__((unused));

/* Listening sockets seen by the current walk: the kernel walks listeners
 * before established sockets, so a connection whose local address and port
 * a listener of its namespace holds was accepted (server role). */
struct fp_listen_key {
	__u64 netns_cookie;
	__u8 addr[16];
	__u16 port;
	__u16 pad[3];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct fp_listen_key);
	__type(value, __u32); /* walk_gen of the walk that saw it */
} listeners SEC(".maps");

/* Kernels before 6.1 keep ancestor IDs instead of pointers. */
struct cgroup___old {
	int level;
	u64 ancestor_ids[];
} __attribute__((preserve_access_index));

#define MAX_CGROUP_DEPTH 32

/* Whether the socket's cgroup is the observed one or below it. */
static __always_inline int in_observed_cgroup(struct sock *sk)
{
	struct cgroup *cg = BPF_CORE_READ(sk, sk_cgrp_data.cgroup);
	if (!cg)
		return 0;
	int level = BPF_CORE_READ(cg, level);
	for (int i = 0; i < MAX_CGROUP_DEPTH; i++) {
		if (i > level)
			break;
		__u64 id;
		if (bpf_core_field_exists(cg->ancestors)) {
			struct cgroup *anc = 0;
			bpf_core_read(&anc, sizeof(anc), &cg->ancestors[i]);
			id = BPF_CORE_READ(anc, kn, id);
		} else {
			struct cgroup___old *old = (void *)cg;
			id = 0;
			bpf_core_read(&id, sizeof(id), &old->ancestor_ids[i]);
		}
		if (id == observed_cgroup_id)
			return 1;
	}
	return 0;
}

static __always_inline void sock_addrs(struct sock_common *skc, __u8 local[16], __u8 peer[16])
{
	if (BPF_CORE_READ(skc, skc_family) == AF_INET) {
		v4_mapped(local, BPF_CORE_READ(skc, skc_rcv_saddr));
		v4_mapped(peer, BPF_CORE_READ(skc, skc_daddr));
	} else {
		bpf_core_read(local, 16, &skc->skc_v6_rcv_saddr);
		bpf_core_read(peer, 16, &skc->skc_v6_daddr);
	}
}

static __always_inline __u64 netns_cookie(struct sock_common *skc)
{
	return BPF_CORE_READ(skc, skc_net.net, net_cookie);
}

static __always_inline void remember_listener(struct sock_common *skc, __u32 gen)
{
	struct fp_listen_key lk = {};
	__u8 peer[16];
	lk.netns_cookie = netns_cookie(skc);
	sock_addrs(skc, lk.addr, peer);
	lk.port = BPF_CORE_READ(skc, skc_num);
	bpf_map_update_elem(&listeners, &lk, &gen, BPF_ANY);
}

static __always_inline int listened(struct fp_listen_key *lk, __u32 gen)
{
	__u32 *seen = bpf_map_lookup_elem(&listeners, lk);
	return seen && *seen == gen;
}

/* Accepted connections share their listener's address and port; a listener
 * on a wildcard address (0.0.0.0, or :: which also takes IPv4) counts too. */
static __always_inline __u8 role_of(struct fp_flow_key *k, __u32 gen)
{
	struct fp_listen_key lk = { .netns_cookie = k->netns_cookie, .port = k->local_port };
	__builtin_memcpy(lk.addr, k->local_addr, 16);
	if (listened(&lk, gen))
		return ROLE_SERVER;
	__builtin_memset(lk.addr, 0, 16);
	if (listened(&lk, gen))
		return ROLE_SERVER;
	v4_mapped(lk.addr, 0);
	if (listened(&lk, gen))
		return ROLE_SERVER;
	return ROLE_CLIENT;
}

static __always_inline void emit(struct seq_file *seq, __u64 cookie, __u8 status, __u8 state, __u8 role, __s32 err)
{
	struct fp_adopt_record r = { .cookie = cookie, .err = err, .status = status, .state = state, .role = role };
	bpf_seq_write(seq, &r, sizeof(r));
}

SEC("iter/tcp")
int flowplace_adopt(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	struct seq_file *seq = ctx->meta->seq;
	if (!skc)
		return 0;
	/* sock_common is all that TIME_WAIT and request sockets share with full
	 * sockets: read nothing else before bpf_skc_to_tcp_sock. */
	__u8 state = BPF_CORE_READ(skc, skc_state);
	if (state == TCP_LISTEN_)
		remember_listener(skc, current_walk());
	if (state != TCP_ESTABLISHED_) {
		emit(seq, 0, ADOPT_NOT_ESTABLISHED, state, 0, 0);
		return 0;
	}
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(skc);
	if (!tp) {
		emit(seq, 0, ADOPT_NOT_ESTABLISHED, state, 0, 0);
		return 0;
	}
	struct sock *sk = (struct sock *)tp;
	__u64 cookie = bpf_get_socket_cookie(sk);
	if (!in_observed_cgroup(sk)) {
		emit(seq, cookie, ADOPT_OTHER_CGROUP, state, 0, 0);
		return 0;
	}
	struct fp_conn_state *cs = conn_of(sk, 0);
	if (cs && cs->tracking) {
		emit(seq, cookie, ADOPT_TRACKED, state, cs->key.role, 0);
		return 0;
	}

	/* Callbacks first: a socket whose state cannot be stored then merely
	 * calls sock_ops, which finds nothing to update. */
	int flags = BPF_CORE_READ(tp, bpf_sock_ops_cb_flags) | BPF_SOCK_OPS_RTT_CB_FLAG | BPF_SOCK_OPS_STATE_CB_FLAG;
	long err = bpf_setsockopt(tp, SOL_TCP_, TCP_BPF_SOCK_OPS_CB_FLAGS, &flags, sizeof(flags));
	if (err) {
		emit(seq, cookie, ADOPT_NO_CALLBACKS, state, 0, err);
		return 0;
	}
	if (!cs) {
		/* connect4 stores the dialed address of connects made after it was
		 * attached; this socket predates it. */
		cs = conn_of(sk, 1);
		if (!cs) {
			count(CNT_STORAGE_FAILED);
			emit(seq, cookie, ADOPT_NO_STORAGE, state, 0, 0);
			return 0;
		}
	}

	struct fp_route_sock *rs = route_sock_of(sk);
	if (rs) {
		__builtin_memcpy(cs->dialed_addr, rs->vip, 16);
		cs->dialed_port = bpf_ntohs(rs->vip_port);
		cs->dialed = 1;
		cs->redirected = 1;
	}

	struct fp_flow_key *k = &cs->key;
	k->family = BPF_CORE_READ(skc, skc_family);
	k->netns_cookie = netns_cookie(skc);
	k->cgroup_id = BPF_CORE_READ(sk, sk_cgrp_data.cgroup, kn, id);
	sock_addrs(skc, k->local_addr, k->peer_addr);
	__u16 lport = BPF_CORE_READ(skc, skc_num);
	__u16 rport = bpf_ntohs(BPF_CORE_READ(skc, skc_dport));
	k->local_port = lport; /* role_of's lookup key; key_ports sets the real value */
	__u8 role = role_of(k, current_walk());
	k->local_port = 0;
	key_ports(cs, role, lport, rport, BPF_CORE_READ(skc, skc_daddr));

	/* Baselines: what the connection moved before now is not counted. */
	cs->start_ns = bpf_ktime_get_ns();
	/* Tracing programs may not read the coarse clock sock_ops folds by; the
	 * precise one can be a tick ahead of it, which only makes the first
	 * fold early. */
	cs->last_fold_ns = cs->start_ns;
	cs->sent_base = BPF_CORE_READ(tp, bytes_acked);
	cs->recv_base = BPF_CORE_READ(tp, bytes_received);
	cs->segs_out_base = BPF_CORE_READ(tp, segs_out);
	cs->segs_in_base = BPF_CORE_READ(tp, segs_in);
	cs->retrans_base = BPF_CORE_READ(tp, total_retrans);
	__u32 srtt = BPF_CORE_READ(tp, srtt_us) >> 3;
	__u32 min_rtt = BPF_CORE_READ(tp, rtt_min.s[0].v);
	cs->srtt_us = srtt;
	cs->min_rtt_us = min_rtt;
	cs->pend_n = 0;
	cs->pend_sum_us = 0;
	cs->pend_min_us = 0;
	cs->adopted = 1;
	cs->tracking = 1;

	struct fp_flow_stats *st = flow_get(k);
	if (st) {
		__sync_fetch_and_add(&st->adopted, 1);
		/* The kernel's current smoothed RTT is this connection's measurement
		 * so far: one sample, so that an idle pooled connection has an RTT
		 * before it next carries traffic. */
		if (srtt) {
			__u32 b = rtt_bucket(srtt);
			/* The compiler can prove the bound, the verifier cannot. */
			asm volatile("" : "+r"(b));
			if (b < RTT_BUCKETS)
				__sync_fetch_and_add(&st->rtt_hist[b], 1);
			__sync_fetch_and_add(&st->rtt_sum_us, srtt);
			__sync_fetch_and_add(&st->rtt_count, 1);
		}
		__u32 cur = st->rtt_min_us;
		if (min_rtt && (cur == 0 || min_rtt < cur))
			__sync_val_compare_and_swap(&st->rtt_min_us, cur, min_rtt);
	}
	emit(seq, cookie, ADOPT_ADOPTED, state, role, 0);
	return 0;
}
