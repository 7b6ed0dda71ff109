package main

// The benchmark application: DeathStarBench's social network (Gan et al.,
// "An Open-Source Benchmark Suite for Microservices and Their
// Hardware-Software Implications for Cloud & Edge Systems", ASPLOS 2019;
// github.com/delimitrou/DeathStarBench, socialNetwork/). Its 26 services are
// those of socialNetwork/docker-compose.yml (Jaeger left out); the call
// trees follow the service code's Thrift calls for the three request types
// of its wrk2 mixed workload (read home timeline, read user timeline,
// compose post) plus media upload through media-frontend. Message sizes
// are estimates for ~1 kB posts and 10-post timelines; cache misses go to
// MongoDB with the probabilities given.

// service is one microservice: CPU it needs (replicas x request, in cores)
// and its own processing time per call.
type service struct {
	name   string
	cpu    int
	procMs float64
	// memGiB is the memory it requests (0: not constrained).
	memGiB float64
}

// call is one RPC in a request's call tree.
type call struct {
	svc string
	// bytes per call, request + response.
	bytes float64
	// prob is the probability the call happens (cache misses); 1 if 0.
	prob float64
	// parallel: the children are called concurrently (latency = max), not
	// one after another (latency = sum).
	parallel bool
	children []call
}

// request is a request type entering at its root service.
type request struct {
	name  string
	share float64
	root  call
}

var services = []service{
	{"nginx-thrift", 8, 0.5, 0},
	{"media-frontend", 4, 1, 0},
	{"compose-post-service", 4, 1, 0},
	{"home-timeline-service", 6, 0.5, 0},
	{"user-timeline-service", 4, 0.5, 0},
	{"post-storage-service", 6, 0.5, 0},
	{"social-graph-service", 3, 0.5, 0},
	{"user-service", 2, 0.5, 0},
	{"text-service", 2, 0.5, 0},
	{"media-service", 2, 0.3, 0},
	{"unique-id-service", 1, 0.1, 0},
	{"url-shorten-service", 2, 0.3, 0},
	{"user-mention-service", 2, 0.3, 0},
	{"post-storage-memcached", 4, 0.1, 0},
	{"post-storage-mongodb", 8, 2, 0},
	{"user-timeline-redis", 3, 0.1, 0},
	{"user-timeline-mongodb", 6, 2, 0},
	{"home-timeline-redis", 4, 0.1, 0},
	{"social-graph-redis", 2, 0.1, 0},
	{"social-graph-mongodb", 4, 2, 0},
	{"user-memcached", 2, 0.1, 0},
	{"user-mongodb", 4, 2, 0},
	{"media-memcached", 2, 0.1, 0},
	{"media-mongodb", 6, 2, 0},
	{"url-shorten-memcached", 1, 0.1, 0},
	{"url-shorten-mongodb", 3, 2, 0},
}

const kB = 1000

func postStorageRead(bytes float64) call {
	return call{svc: "post-storage-service", bytes: bytes, children: []call{
		{svc: "post-storage-memcached", bytes: bytes},
		{svc: "post-storage-mongodb", bytes: bytes, prob: 0.1},
	}}
}

var requests = []request{
	{"read-home-timeline", 0.57, call{svc: "nginx-thrift", bytes: 12 * kB, children: []call{
		{svc: "home-timeline-service", bytes: 10.5 * kB, children: []call{
			{svc: "home-timeline-redis", bytes: 1 * kB},
			postStorageRead(10 * kB),
		}},
	}}},
	{"read-user-timeline", 0.28, call{svc: "nginx-thrift", bytes: 12 * kB, children: []call{
		{svc: "user-timeline-service", bytes: 10.5 * kB, children: []call{
			{svc: "user-timeline-redis", bytes: 1 * kB},
			{svc: "user-timeline-mongodb", bytes: 1 * kB, prob: 0.2},
			postStorageRead(10 * kB),
		}},
	}}},
	{"compose-post", 0.10, call{svc: "nginx-thrift", bytes: 3 * kB, children: []call{
		{svc: "compose-post-service", bytes: 2.5 * kB, parallel: true, children: []call{
			{svc: "unique-id-service", bytes: 0.2 * kB},
			{svc: "text-service", bytes: 2 * kB, parallel: true, children: []call{
				{svc: "url-shorten-service", bytes: 0.6 * kB, children: []call{
					{svc: "url-shorten-memcached", bytes: 0.5 * kB},
					{svc: "url-shorten-mongodb", bytes: 0.5 * kB},
				}},
				{svc: "user-mention-service", bytes: 0.6 * kB, children: []call{
					{svc: "user-memcached", bytes: 0.5 * kB},
					{svc: "user-mongodb", bytes: 0.5 * kB, prob: 0.2},
				}},
			}},
			{svc: "user-service", bytes: 0.6 * kB, children: []call{
				{svc: "user-memcached", bytes: 0.5 * kB},
				{svc: "user-mongodb", bytes: 0.5 * kB, prob: 0.2},
			}},
			{svc: "media-service", bytes: 0.5 * kB},
			{svc: "post-storage-service", bytes: 2 * kB, children: []call{
				{svc: "post-storage-mongodb", bytes: 2 * kB},
			}},
			{svc: "user-timeline-service", bytes: 0.5 * kB, children: []call{
				{svc: "user-timeline-mongodb", bytes: 0.5 * kB},
				{svc: "user-timeline-redis", bytes: 0.5 * kB},
			}},
			{svc: "home-timeline-service", bytes: 0.5 * kB, children: []call{
				{svc: "social-graph-service", bytes: 1 * kB, children: []call{
					{svc: "social-graph-redis", bytes: 1 * kB},
					{svc: "social-graph-mongodb", bytes: 1 * kB, prob: 0.2},
				}},
				// Fan-out of the post id to followers' timelines.
				{svc: "home-timeline-redis", bytes: 5 * kB},
			}},
		}},
	}}},
	{"upload-media", 0.05, call{svc: "media-frontend", bytes: 100 * kB, children: []call{
		{svc: "media-memcached", bytes: 1 * kB},
		{svc: "media-mongodb", bytes: 100 * kB},
	}}},
}

// clientShare is where requests come from, by region of the clusters.
var clientShare = map[string]float64{
	"us-east-1":      0.35,
	"us-west-2":      0.15,
	"eu-west-1":      0.25,
	"eu-central-1":   0.10,
	"ap-northeast-1": 0.15,
}

// requestsPerSecond is the total client load.
const requestsPerSecond = 2000

// capacity in cores per cluster (by region): the application needs 95
// cores, the largest cluster has 40, the fleet 160, so no cluster can host
// everything.
var capacity = map[string]int{
	"us-east-1":      40,
	"us-west-2":      30,
	"eu-west-1":      35,
	"eu-central-1":   25,
	"ap-northeast-1": 30,
}
