//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* sock_ops (routing): passive outlier detection. A routed connect fails when
 * its SYN goes unanswered for one retransmission timeout, or when it is
 * reset or abandoned before it is established; fail_threshold consecutive
 * failures eject the backend for base_ejection << ejections (capped at
 * max_ejection), and the connect path skips it until then. An established
 * connect clears the failures. Only routed sockets enable the callbacks,
 * so other connections cost one map lookup at connect. */
#include "route.h"

char __license[] SEC("license") = "Dual BSD/GPL";

#define TCP_SYN_SENT_ 2
#define TCP_CLOSE_ 7

static __always_inline struct fp_route_sock *routed(struct bpf_sock_ops *skops)
{
	return route_sock_of(skops->sk);
}

static __always_inline struct fp_route_health *health_of(__u32 backend)
{
	struct fp_route_health *h = bpf_map_lookup_elem(&route_health, &backend);
	if (h)
		return h;
	struct fp_route_health zero = {};
	bpf_map_update_elem(&route_health, &backend, &zero, BPF_NOEXIST);
	return bpf_map_lookup_elem(&route_health, &backend);
}

static __always_inline void failed(struct fp_route_sock *rs)
{
	if (rs->failed)
		return;
	rs->failed = 1;
	struct fp_route_stats_key sk = { .service = rs->service, .cluster = rs->cluster, .tier = rs->tier,
					 .fallback = rs->fallback };
	struct fp_route_stats *st = rt_stats(&sk);
	if (st)
		st->failed++;

	__u32 zero = 0;
	struct fp_route_config *cfg = bpf_map_lookup_elem(&route_config, &zero);
	struct fp_route_health *h = health_of(rs->backend);
	if (!cfg || !h || cfg->fail_threshold == 0)
		return;
	__u64 now = bpf_ktime_get_ns();
	h->last_failure_ns = now;
	__u32 n = __sync_fetch_and_add(&h->failures, 1) + 1;
	if (n < cfg->fail_threshold || h->ejected_until_ns > now)
		return;
	__u32 shift = h->ejections;
	if (shift > RT_MAX_EJECTION_SHIFT)
		shift = RT_MAX_EJECTION_SHIFT;
	__u64 d = cfg->base_ejection_ns << shift;
	if (d > cfg->max_ejection_ns)
		d = cfg->max_ejection_ns;
	h->ejected_until_ns = now + d;
	h->failures = 0;
	__sync_fetch_and_add(&h->ejections, 1);
	/* Raced by another CPU, the later end wins or the loser's is shorter
	 * by a few ns: connects then skip health checks only once both ended. */
	__u64 *until = bpf_map_lookup_elem(&route_ejecting, &zero);
	if (until && *until < h->ejected_until_ns)
		*until = h->ejected_until_ns;
}

static __always_inline void succeeded(struct fp_route_sock *rs)
{
	struct fp_route_health *h = bpf_map_lookup_elem(&route_health, &rs->backend);
	if (h && h->failures)
		h->failures = 0;
}

SEC("sockops")
int flowplace_route_sockops(struct bpf_sock_ops *skops)
{
	struct fp_route_sock *rs;

	switch (skops->op) {
	case BPF_SOCK_OPS_TCP_CONNECT_CB:
		if (routed(skops))
			bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_RTO_CB_FLAG |
								 BPF_SOCK_OPS_STATE_CB_FLAG);
		break;
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
		rs = routed(skops);
		if (rs) {
			succeeded(rs);
			/* Retransmission timeouts of an established connection say
			 * nothing about whether the backend accepts connects. */
			bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags & ~BPF_SOCK_OPS_RTO_CB_FLAG);
		}
		break;
	case BPF_SOCK_OPS_RTO_CB:
		if (skops->state != TCP_SYN_SENT_)
			break;
		rs = routed(skops);
		if (rs)
			failed(rs);
		break;
	case BPF_SOCK_OPS_STATE_CB:
		if (skops->args[1] != TCP_CLOSE_)
			break;
		rs = routed(skops);
		if (!rs)
			break;
		if (skops->args[0] == TCP_SYN_SENT_)
			failed(rs); /* reset, refused, or given up before established */
		break;
	}
	return 1;
}
