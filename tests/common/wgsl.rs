//! WGSL reflection with naga: the layout of a shader struct, to check it against the host's.
//!
//! Included with `#[path = "common/wgsl.rs"] mod wgsl;` by the files that use it (so that the
//! others do not link naga).

#![allow(dead_code)]

/// Members (name, byte offset) and size of the WGSL struct `name` in `source`; the struct's span
/// is checked to equal its layout size.
pub fn shader_struct(source: &str, name: &str) -> (Vec<(String, usize)>, usize) {
    let module = naga::front::wgsl::parse_str(source).unwrap();
    let mut layouter = naga::proc::Layouter::default();
    layouter.update(module.to_ctx()).unwrap();
    let (handle, ty) = module
        .types
        .iter()
        .find(|(_, t)| t.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("{name} not in the shader"));
    let naga::TypeInner::Struct { members, span } = &ty.inner else {
        panic!("{name} is not a struct");
    };
    assert_eq!(layouter[handle].size, *span, "{name}: span and layout size");
    let members = members
        .iter()
        .map(|m| (m.name.clone().unwrap_or_default(), m.offset as usize))
        .collect();
    (members, layouter[handle].size as usize)
}
