package otlpwire

import (
	"fmt"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

// The decoder reads a few fields and must still refuse exactly what
// proto.Unmarshal refuses in the rest: wire errors inside every known
// submessage, invalid UTF-8 in every proto3 string, nesting past proto's
// recursion limit. These schemas say, for the messages the decoder does
// not walk itself, which fields are strings, packed scalars or messages;
// any other field is checked as proto checks unknown fields (its wire
// form only).

type fieldKind uint8

const (
	fieldOther    fieldKind = iota // scalar or unknown: wire form only
	fieldVarints                   // repeated varint: packed form allowed
	fieldFixed64s                  // repeated fixed64: packed form allowed
	fieldString                    // proto3 string: UTF-8
	fieldMessage
)

type fieldSpec struct {
	kind fieldKind
	msg  *schema
}

type schema struct {
	name   string
	fields []fieldSpec // by field number
}

func newSchema(name string, fields map[protowire.Number]fieldSpec) *schema {
	s := &schema{name: name}
	for num, f := range fields {
		for int(num) >= len(s.fields) {
			s.fields = append(s.fields, fieldSpec{})
		}
		s.fields[num] = f
	}
	return s
}

// maxDepth is proto.Unmarshal's default recursion limit (the request is
// at depth 1).
const maxDepth = protowire.DefaultRecursionLimit

var (
	anyValueSchema, arrayValueSchema, kvListSchema, kvSchema               *schema
	resourceSchema, scopeSchema, exemplarSchema                            *schema
	numberPointSchema, histPointSchema, expPointSchema, summaryPointSchema *schema
	dataSchemas                                                            map[protowire.Number]*schema // by Metric field
)

func init() {
	str := fieldSpec{kind: fieldString}
	msg := func(s **schema) fieldSpec { return fieldSpec{kind: fieldMessage, msg: *s} }
	anyValueSchema, arrayValueSchema, kvListSchema = &schema{}, &schema{}, &schema{}
	kvSchema = newSchema("key-value", map[protowire.Number]fieldSpec{1: str, 2: msg(&anyValueSchema)})
	*anyValueSchema = *newSchema("any value", map[protowire.Number]fieldSpec{1: str, 5: msg(&arrayValueSchema), 6: msg(&kvListSchema)})
	*arrayValueSchema = *newSchema("array value", map[protowire.Number]fieldSpec{1: msg(&anyValueSchema)})
	*kvListSchema = *newSchema("key-value list", map[protowire.Number]fieldSpec{1: msg(&kvSchema)})
	entityRef := newSchema("entity ref", map[protowire.Number]fieldSpec{1: str, 2: str, 3: str, 4: str})
	resourceSchema = newSchema("resource", map[protowire.Number]fieldSpec{1: msg(&kvSchema), 3: msg(&entityRef)})
	scopeSchema = newSchema("scope", map[protowire.Number]fieldSpec{1: str, 2: str, 3: msg(&kvSchema)})
	exemplarSchema = newSchema("exemplar", map[protowire.Number]fieldSpec{7: msg(&kvSchema)})
	numberPointSchema = newSchema("number point", map[protowire.Number]fieldSpec{7: msg(&kvSchema), 5: msg(&exemplarSchema)})
	histPointSchema = newSchema("histogram point", map[protowire.Number]fieldSpec{9: msg(&kvSchema), 8: msg(&exemplarSchema),
		6: {kind: fieldFixed64s}, 7: {kind: fieldFixed64s}})
	buckets := newSchema("buckets", map[protowire.Number]fieldSpec{2: {kind: fieldVarints}})
	expPointSchema = newSchema("exponential histogram point", map[protowire.Number]fieldSpec{1: msg(&kvSchema), 11: msg(&exemplarSchema),
		8: msg(&buckets), 9: msg(&buckets)})
	summaryPointSchema = newSchema("summary point", map[protowire.Number]fieldSpec{7: msg(&kvSchema), 6: {kind: fieldMessage, msg: &schema{name: "quantile"}}})
	points := func(name string, p *schema) *schema {
		return newSchema(name, map[protowire.Number]fieldSpec{1: {kind: fieldMessage, msg: p}})
	}
	dataSchemas = map[protowire.Number]*schema{
		5: points("gauge", numberPointSchema), 7: points("sum", numberPointSchema), 9: points("histogram", histPointSchema),
		10: points("exponential histogram", expPointSchema), 11: points("summary", summaryPointSchema),
	}
}

// validate checks message b, at the given depth, as proto.Unmarshal would.
func validate(s *schema, b []byte, depth int) error {
	if depth > maxDepth {
		return fmt.Errorf("%w: %s: nested deeper than %d messages", ErrMalformed, s.name, maxDepth)
	}
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return wireErr(s.name+" tag", n)
		}
		b = b[n:]
		var f fieldSpec
		if int(num) < len(s.fields) {
			f = s.fields[num]
		}
		if typ != protowire.BytesType || f.kind == fieldOther {
			m := protowire.ConsumeFieldValue(num, typ, b)
			if m < 0 {
				return wireErr(s.name, m)
			}
			b = b[m:]
			continue
		}
		v, m := protowire.ConsumeBytes(b)
		if m < 0 {
			return wireErr(s.name, m)
		}
		b = b[m:]
		var err error
		switch f.kind {
		case fieldString:
			err = checkUTF8(v, s.name)
		case fieldMessage:
			err = validate(f.msg, v, depth+1)
		case fieldFixed64s:
			if len(v)%8 != 0 {
				err = fmt.Errorf("%w: %s: packed fixed64 length %d not a multiple of 8", ErrMalformed, s.name, len(v))
			}
		case fieldVarints:
			err = checkVarints(v, s.name)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func checkUTF8(v []byte, what string) error {
	if !utf8.Valid(v) {
		return fmt.Errorf("%w: %s: invalid UTF-8 in a string field", ErrMalformed, what)
	}
	return nil
}

func checkVarints(v []byte, what string) error {
	for len(v) > 0 {
		_, n := protowire.ConsumeVarint(v)
		if n < 0 {
			return wireErr(what+" packed varint", n)
		}
		v = v[n:]
	}
	return nil
}
