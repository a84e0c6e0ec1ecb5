//! The answer to `rpc.describe`: the services, their methods and parameters, and the callback
//! interfaces their parameters take (docs/rpc.md, "Descriptions").

use serde::ser::{Serialize, SerializeMap, Serializer};

use super::typed::{CallbackMethod, Signature};

/// Every method of a [`Services`](super::Services), grouped by service in the order the
/// services were first registered.
pub(super) struct Description<'a> {
    services: Vec<Service<'a>>,
    /// Every interface a parameter takes, once, in order of appearance.
    callbacks: Vec<(&'static str, &'static [CallbackMethod])>,
}

struct Service<'a> {
    name: &'a str,
    methods: Vec<Method<'a>>,
}

struct Method<'a> {
    name: &'a str,
    /// `None`: registered by hand, its parameters unknown.
    signature: Option<&'a Signature>,
}

impl<'a> Description<'a> {
    /// `signatures`: every method's full name (`Service.method`) and description.
    pub(super) fn new(signatures: &'a [(Box<str>, Option<Signature>)]) -> Self {
        let mut description = Self { services: Vec::new(), callbacks: Vec::new() };
        for (name, signature) in signatures {
            description.add(name, signature.as_ref());
        }
        description
    }

    fn add(&mut self, name: &'a str, signature: Option<&'a Signature>) {
        let (service, method) = match signature {
            // The service's name may hold a dot: the method's is known.
            Some(s) => (&name[..name.len() - s.name.len() - 1], s.name),
            None => name.split_once('.').unwrap_or((name, "")),
        };
        let index = match self.services.iter().position(|s| s.name == service) {
            Some(index) => index,
            None => {
                self.services.push(Service { name: service, methods: Vec::new() });
                self.services.len() - 1
            }
        };
        self.services[index].methods.push(Method { name: method, signature });
        for &(_, interface, methods) in signature.map_or(&[][..], |s| &s.callbacks) {
            if !self.callbacks.iter().any(|&(known, _)| known == interface) {
                self.callbacks.push((interface, methods));
            }
        }
    }
}

impl Serialize for Description<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let interfaces: Vec<Interface> =
            self.callbacks.iter().map(|&(name, methods)| Interface { name, methods }).collect();
        let mut map = serializer.serialize_map(Some(2))?;
        map.serialize_entry("services", &self.services)?;
        map.serialize_entry("callbacks", &interfaces)?;
        map.end()
    }
}

impl Serialize for Service<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(2))?;
        map.serialize_entry("name", self.name)?;
        map.serialize_entry("methods", &self.methods)?;
        map.end()
    }
}

impl Serialize for Method<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("name", self.name)?;
        map.serialize_entry("params", &self.signature.map(|s| s.params))?;
        if let Some(signature) = self.signature {
            let callbacks = Callbacks(&signature.callbacks);
            map.serialize_entry("callbacks", &callbacks)?;
        }
        map.end()
    }
}

/// A method's callback parameters: `{"param": "Interface"}`.
struct Callbacks<'a>(&'a [(&'static str, &'static str, &'static [CallbackMethod])]);

impl Serialize for Callbacks<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|&(param, interface, _)| (param, interface)))
    }
}

struct Interface {
    name: &'static str,
    methods: &'static [CallbackMethod],
}

impl Serialize for Interface {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(2))?;
        map.serialize_entry("name", self.name)?;
        map.serialize_entry("methods", &self.methods)?;
        map.end()
    }
}

impl Serialize for CallbackMethod {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(3))?;
        map.serialize_entry("name", self.name())?;
        map.serialize_entry("params", self.params())?;
        map.serialize_entry("answer", &self.answers())?;
        map.end()
    }
}
