package main

import (
	"slices"
	"testing"
)

// TestGeneratedPlacement: on generated instances, flowplace's placement
// through the real plugins, in each arrival order, fits every cluster's
// CPU and memory, never costs more than the same plugins without the
// capacity plan in the same order, and is the same placement run after
// run. Needs no CBC: it compares placements with each other, not with a
// reference.
func TestGeneratedPlacement(t *testing.T) {
	rm := fitRTTModel()
	tested := 0
	for seed := uint64(1); tested < 8; seed++ {
		in, spec := generate(seed, rm)
		if in.firstFitDecreasing() == nil {
			continue
		}
		if _, err := in.place(defaultPolicy); err != nil {
			continue // the sweep skips these too: not placeable online
		}
		tested++
		o := in.objective()
		for _, order := range []arrivalOrder{callersFirst, calleesFirst, randomOrder} {
			in.arrival, in.arrivalSeed = order, seed
			fp, err := in.place(flowplacePolicyWith(true))
			if err != nil {
				t.Errorf("%s, %s: flowplace left a binding unschedulable: %v", spec, order, err)
				continue
			}
			if !o.fits(fp) {
				t.Errorf("%s, %s: placement %v over capacity", spec, order, fp)
			}
			again, err := in.place(flowplacePolicyWith(true))
			if err != nil || !slices.Equal(again, fp) {
				t.Errorf("%s, %s: placement not deterministic: %v then %v (%v)", spec, order, fp, again, err)
			}
			noPlan, err := in.place(flowplacePolicyWith(false))
			if err != nil {
				continue // without the plan it does not even fit: nothing to compare
			}
			if got, without := o.cost(fp), o.cost(noPlan); got > without*(1+1e-9) {
				t.Errorf("%s, %s: cost %.4g with the plan, %.4g without", spec, order, got, without)
			}
		}
		pa := in.planAlone()
		if !o.fits(pa) {
			t.Errorf("%s: plan alone over capacity: %v", spec, pa)
		}
		if again := in.planAlone(); !slices.Equal(again, pa) {
			t.Errorf("%s: plan not deterministic: %v then %v", spec, pa, again)
		}
	}
}
