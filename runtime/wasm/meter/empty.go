package meter

// EmptyExport reports whether wasm exports a function called name whose
// body has no instructions, so that calling it can do nothing: the host
// may leave the call out. A module it cannot read reports false.
func EmptyExport(wasm []byte, name string) bool {
	m, err := parse(wasm)
	if err != nil {
		return false
	}
	fn, exported := uint32(0), false
	var code []byte
	for _, s := range m.sections {
		switch s.id {
		case secExport:
			r := reader{b: s.body}
			for n := r.u32(); n > 0 && r.err == nil; n-- {
				export, kind, idx := r.name(), r.byte(), r.u32()
				if r.err == nil && kind == 0 && export == name {
					fn, exported = idx, true
				}
			}
		case secCode:
			code = s.body
		}
	}
	if !exported || fn < m.funcImports {
		return false
	}
	r := reader{b: code}
	for i, n := uint32(0), r.u32(); i < n && r.err == nil; i++ {
		body := r.bytes(r.u32())
		if i != fn-m.funcImports {
			continue
		}
		b := reader{b: body}
		for g := b.u32(); g > 0 && b.err == nil; g-- {
			b.u32()
			b.valType()
		}
		return b.byte() == opEnd && b.end() == nil
	}
	return false
}
