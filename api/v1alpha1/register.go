package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GroupName is the API group of flowplace's own objects.
const GroupName = "flowplace.io"

// SchemeGroupVersion is flowplace.io/v1alpha1.
var SchemeGroupVersion = schema.GroupVersion{Group: GroupName, Version: "v1alpha1"}

// Resources, for dynamic clients and informers.
var (
	ClusterLatencyResource  = SchemeGroupVersion.WithResource("clusterlatencies")
	WorkloadTrafficResource = SchemeGroupVersion.WithResource("workloadtraffics")
)

var (
	// SchemeBuilder registers the types of this package.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)
	// AddToScheme adds the types of this package to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(scheme *runtime.Scheme) error {
	scheme.AddKnownTypes(SchemeGroupVersion,
		&ClusterLatency{}, &ClusterLatencyList{},
		&WorkloadTraffic{}, &WorkloadTrafficList{},
	)
	metav1.AddToGroupVersion(scheme, SchemeGroupVersion)
	return nil
}
