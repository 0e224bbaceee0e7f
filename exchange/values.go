package exchange

import (
	"bytes"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Values in argument tables and message headers follow the AMQP field-table
// model: bool, every integer width, float32/64, string, []byte, []any,
// time.Time, nested tables (map[string]any or a named map type such as
// wire.Table) and nil (void). RabbitMQ compares such values by "type class"
// first (all integer widths form one class) and then by value, so a header
// sent as int8 equals a binding argument declared as int64.

type typeClass uint8

const (
	classOther typeClass = iota
	classVoid
	classBool
	classInt
	classFloat
	classString
	classBytes
	classTime
	classArray
	classTable
)

// intParts splits an integer of any width into sign and magnitude so that
// uint64 values above math.MaxInt64 still compare exactly.
func intParts(v any) (neg bool, mag uint64, ok bool) {
	var s int64
	switch x := v.(type) {
	case int:
		s = int64(x)
	case int8:
		s = int64(x)
	case int16:
		s = int64(x)
	case int32:
		s = int64(x)
	case int64:
		s = x
	case uint:
		return false, uint64(x), true
	case uint8:
		return false, uint64(x), true
	case uint16:
		return false, uint64(x), true
	case uint32:
		return false, uint64(x), true
	case uint64:
		return false, x, true
	default:
		return false, 0, false
	}
	if s < 0 {
		return true, uint64(-(s + 1)) + 1, true
	}
	return false, uint64(s), true
}

// AsInt returns v as an int64 if it is an integer of any width. Values of
// uint64 beyond math.MaxInt64 saturate, which is enough for range checks.
func AsInt(v any) (int64, bool) {
	neg, mag, ok := intParts(v)
	if !ok {
		return 0, false
	}
	if neg {
		if mag > 1<<63 {
			return math.MinInt64, true
		}
		return -int64(mag-1) - 1, true
	}
	if mag > math.MaxInt64 {
		return math.MaxInt64, true
	}
	return int64(mag), true
}

func classOf(v any) typeClass {
	switch v.(type) {
	case nil:
		return classVoid
	case bool:
		return classBool
	case int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64:
		return classInt
	case float32, float64:
		return classFloat
	case string:
		return classString
	case []byte:
		return classBytes
	case time.Time:
		return classTime
	case []any:
		return classArray
	case map[string]any:
		return classTable
	}
	rv := reflect.ValueOf(v)
	switch {
	case rv.Kind() == reflect.Map && rv.Type().Key().Kind() == reflect.String:
		return classTable
	case rv.Kind() == reflect.Slice && rv.Type().Elem().Kind() == reflect.Interface:
		return classArray
	}
	return classOther
}

func asFloat(v any) float64 {
	switch x := v.(type) {
	case float32:
		return float64(x)
	case float64:
		return x
	}
	return 0
}

// asTable views a table of any named map type as map[string]any. The common
// case (plain map[string]any) does not allocate.
func asTable(v any) map[string]any {
	if m, ok := v.(map[string]any); ok {
		return m
	}
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Map || rv.Type().Key().Kind() != reflect.String {
		return nil
	}
	m := make(map[string]any, rv.Len())
	iter := rv.MapRange()
	for iter.Next() {
		m[iter.Key().String()] = iter.Value().Interface()
	}
	return m
}

func asArray(v any) []any {
	if a, ok := v.([]any); ok {
		return a
	}
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Slice {
		return nil
	}
	a := make([]any, rv.Len())
	for i := range a {
		a[i] = rv.Index(i).Interface()
	}
	return a
}

// ValuesEqual reports whether two field values are equal the way RabbitMQ
// compares them: same type class, then equal value (integers of any width
// compare numerically; nested tables and arrays compare element-wise).
func ValuesEqual(a, b any) bool {
	ca, cb := classOf(a), classOf(b)
	if ca != cb {
		return false
	}
	switch ca {
	case classVoid:
		return true
	case classBool:
		return a.(bool) == b.(bool)
	case classInt:
		na, ma, _ := intParts(a)
		nb, mb, _ := intParts(b)
		return na == nb && ma == mb
	case classFloat:
		return asFloat(a) == asFloat(b)
	case classString:
		return a.(string) == b.(string)
	case classBytes:
		return bytes.Equal(a.([]byte), b.([]byte))
	case classTime:
		return a.(time.Time).Equal(b.(time.Time))
	case classArray:
		return slices.EqualFunc(asArray(a), asArray(b), ValuesEqual)
	case classTable:
		return ArgsEqual(asTable(a), asTable(b))
	}
	return reflect.DeepEqual(a, b)
}

// ArgsEqual compares two argument tables with ValuesEqual; nil and empty
// tables are equal.
func ArgsEqual(a, b map[string]any) bool {
	if len(a) != len(b) {
		return false
	}
	for k, va := range a {
		vb, ok := b[k]
		if !ok || !ValuesEqual(va, vb) {
			return false
		}
	}
	return true
}

// CanonicalArgs encodes a table deterministically (sorted keys, integer
// widths erased) so that equal tables give equal strings. It identifies
// bindings and orders them; it is not meant to be decoded.
func CanonicalArgs(args map[string]any) string {
	if len(args) == 0 {
		return ""
	}
	var sb strings.Builder
	writeCanonicalTable(&sb, args)
	return sb.String()
}

func writeCanonicalString(sb *strings.Builder, s string) {
	sb.WriteString(strconv.Itoa(len(s)))
	sb.WriteByte(':')
	sb.WriteString(s)
}

func writeCanonicalTable(sb *strings.Builder, t map[string]any) {
	keys := make([]string, 0, len(t))
	for k := range t {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	sb.WriteByte('{')
	for _, k := range keys {
		writeCanonicalString(sb, k)
		writeCanonicalValue(sb, t[k])
	}
	sb.WriteByte('}')
}

func writeCanonicalValue(sb *strings.Builder, v any) {
	switch classOf(v) {
	case classVoid:
		sb.WriteByte('V')
	case classBool:
		if v.(bool) {
			sb.WriteString("t1")
		} else {
			sb.WriteString("t0")
		}
	case classInt:
		neg, mag, _ := intParts(v)
		sb.WriteByte('I')
		if neg {
			sb.WriteByte('-')
		}
		sb.WriteString(strconv.FormatUint(mag, 10))
		sb.WriteByte(';')
	case classFloat:
		sb.WriteByte('D')
		sb.WriteString(strconv.FormatFloat(asFloat(v), 'g', -1, 64))
		sb.WriteByte(';')
	case classString:
		sb.WriteByte('S')
		writeCanonicalString(sb, v.(string))
	case classBytes:
		sb.WriteByte('x')
		writeCanonicalString(sb, string(v.([]byte)))
	case classTime:
		sb.WriteByte('T')
		sb.WriteString(strconv.FormatInt(v.(time.Time).Unix(), 10))
		sb.WriteByte(';')
	case classArray:
		arr := asArray(v)
		sb.WriteByte('[')
		for _, e := range arr {
			writeCanonicalValue(sb, e)
		}
		sb.WriteByte(']')
	case classTable:
		writeCanonicalTable(sb, asTable(v))
	default:
		sb.WriteByte('?')
		writeCanonicalString(sb, reflect.TypeOf(v).String())
		writeCanonicalString(sb, FormatValue(v))
	}
}

// TypeName is RabbitMQ's name for the field type of v, as it appears in its
// error texts ("signedint", "longstr", ...).
func TypeName(v any) string {
	switch v.(type) {
	case nil:
		return "void"
	case bool:
		return "bool"
	case int8:
		return "byte"
	case uint8:
		return "unsignedbyte"
	case int16:
		return "short"
	case uint16:
		return "unsignedshort"
	case int32:
		return "signedint"
	case uint32:
		return "unsignedint"
	case int, int64, uint, uint64:
		return "long"
	case float32:
		return "float"
	case float64:
		return "double"
	case string:
		return "longstr"
	case []byte:
		return "binary"
	case time.Time:
		return "timestamp"
	}
	switch classOf(v) {
	case classArray:
		return "array"
	case classTable:
		return "table"
	}
	return reflect.TypeOf(v).String()
}

// FormatValue renders a field value for an error text.
func FormatValue(v any) string {
	switch x := v.(type) {
	case nil:
		return "undefined"
	case bool:
		return strconv.FormatBool(x)
	case string:
		return x
	case []byte:
		return string(x)
	case float32:
		return strconv.FormatFloat(float64(x), 'g', -1, 32)
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64)
	case time.Time:
		return strconv.FormatInt(x.Unix(), 10)
	}
	if neg, mag, ok := intParts(v); ok {
		if neg {
			return "-" + strconv.FormatUint(mag, 10)
		}
		return strconv.FormatUint(mag, 10)
	}
	switch classOf(v) {
	case classArray, classTable:
		var sb strings.Builder
		writeCanonicalValue(&sb, v)
		return sb.String()
	}
	return reflect.ValueOf(v).String()
}
