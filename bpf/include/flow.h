/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Types and maps shared by flowplace's socket programs. Every object that
 * includes this header declares the same maps; the loader creates them once
 * and hands them to the other objects (CollectionOptions.MapReplacements). */
#pragma once

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>

#define AF_INET 2
#define AF_INET6 10
#define SOCK_STREAM 1

/* Log-linear RTT histogram over microseconds: exact below 16 us, then 16
 * sub-buckets per power of two (bucket width <= 1/16 of its lower bound, so
 * a bucket midpoint is within 3.2% of any value in it), up to 2^23 us (8.4 s);
 * larger values land in the last bucket. internal/loghist mirrors this. */
#define RTT_SUB_BITS 4
#define RTT_SUB (1 << RTT_SUB_BITS)
#define RTT_MAX_EXP 22
#define RTT_BUCKETS ((RTT_MAX_EXP - RTT_SUB_BITS + 2) * RTT_SUB)

#define RTT_PENDING 8
#define FOLD_INTERVAL_NS 1000000000ULL

enum flow_role {
	ROLE_CLIENT = 1, /* this socket connected (active open) */
	ROLE_SERVER = 2, /* this socket was accepted (passive open) */
};

/* Aggregation key. Addresses are IPv6 or IPv4-mapped IPv6, network order;
 * ports host order. A server-side key has peer_port 0: the client's
 * ephemeral port would make the key space unbounded. Per-connection keys
 * (local_port set) exist only for NAT'd service addresses; userspace removes
 * them once the connection is accounted. */
struct fp_flow_key {
	__u64 cgroup_id;
	__u64 netns_cookie;
	__u8 local_addr[16];
	__u8 dialed_addr[16];
	__u8 peer_addr[16];
	__u16 dialed_port;
	__u16 peer_port;
	__u8 role;
	__u8 family;
	/* Client port, only for connections to a service address that is
	 * translated outside the socket (kube-proxy DNAT): such a flow is one
	 * connection, so userspace can find its real backend in conntrack. */
	__u16 local_port;
};

/* Aggregate per key. Counters only grow during an entry's lifetime;
 * created_ns identifies the incarnation so userspace can tell an entry that
 * was evicted and re-created from one that kept counting. */
struct fp_flow_stats {
	__u64 created_ns;
	__u64 opened;
	__u64 closed;
	__u64 bytes_sent; /* payload bytes acknowledged by the peer */
	__u64 bytes_received;
	__u64 segs_out;
	__u64 segs_in;
	__u64 retrans;
	__u64 duration_ns; /* summed over closed connections */
	__u64 rtt_sum_us; /* sum of smoothed-RTT samples */
	__u64 rtt_count;
	__u32 rtt_min_us; /* smallest raw RTT sample; 0 = none yet */
	/* connections that were open before the probes were attached, measured
	 * from their adoption on (counted here, not in opened: they were not
	 * established now) */
	__u32 adopted;
	__u32 rtt_hist[RTT_BUCKETS];
};

/* Per-socket state, keyed by socket cookie in a preallocated LRU hash:
 * inserting there costs a fraction of allocating socket-local storage
 * (measured ~650 ns per socket here). Entries are removed at close; the LRU
 * reclaims those of sockets that never established. */
struct fp_conn_state {
	struct fp_flow_key key;
	__u64 start_ns;
	__u64 sent_base; /* bytes_acked already accounted */
	__u64 recv_base;
	__u32 segs_out_base;
	__u32 segs_in_base;
	__u32 retrans_base;
	__u32 srtt_us;
	__u32 min_rtt_us;
	/* written by connect4 before the connection exists */
	__u8 dialed_addr[16];
	__u16 dialed_port;
	__u8 dialed; /* dialed_* valid */
	__u8 redirected; /* connect4 rewrote the destination */
	__u8 tracking; /* established and counted */
	__u8 adopted; /* open before the probes; found by the adoption walk */
	/* RTT samples not yet folded into the aggregate: folding costs a hash
	 * lookup, so it happens every RTT_PENDING samples, every
	 * FOLD_INTERVAL_NS, and at close. */
	__u8 pend_n;
	__u16 pend_bucket[RTT_PENDING];
	__u32 pend_min_us;
	__u64 pend_sum_us;
	__u64 last_fold_ns;
};

/* Global counters, index by enum fp_counter. */
enum fp_counter {
	CNT_FLOW_CREATED = 0, /* flow_stats entries inserted */
	CNT_FLOW_INSERT_FAILED, /* insert refused (not LRU eviction) */
	CNT_STORAGE_FAILED, /* no per-socket state: connection not tracked */
	CNT_REDIRECTED, /* connects that routing redirected */
	CNT_MAX,
};

struct fp_redirect_key {
	__be32 addr;
	__be16 port;
	__u16 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096); /* the loader may resize */
	__type(key, struct fp_flow_key);
	__type(value, struct fp_flow_stats);
} flows SEC(".maps");

/* Per-connection state in socket-local storage: found through the socket
 * (no hash of the cookie, no walk), never evicted while the connection
 * lives, and freed with the socket. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct fp_conn_state);
} conns SEC(".maps");

/* sk's connection state, created zeroed when create and absent; NULL when
 * sk is NULL or the state cannot be allocated. sk is read once, so the
 * verifier sees its NULL check on the register the helper gets. */
#define conn_of(sk, create)                                                                             \
	({                                                                                              \
		void *__csk = (void *)(sk);                                                             \
		(struct fp_conn_state *)(__csk ? bpf_sk_storage_get(&conns, __csk, 0,                  \
								    (create) ? BPF_SK_STORAGE_GET_F_CREATE : 0) \
					       : 0);                                                    \
	})

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

/* Service addresses (IPv4 address:port) that something outside the socket
 * translates, e.g. kube-proxy ClusterIPs. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536);
	__type(key, struct fp_redirect_key);
	__type(value, __u8);
} nat_services SEC(".maps");

static __always_inline void count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &idx);
	if (v)
		*v += 1; /* per-CPU: no atomics needed */
}

static __always_inline void v4_mapped(__u8 dst[16], __be32 addr)
{
	__builtin_memset(dst, 0, 10);
	dst[10] = 0xff;
	dst[11] = 0xff;
	__builtin_memcpy(&dst[12], &addr, 4);
}
