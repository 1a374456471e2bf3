//! Specs, matcher, generate(), CMDB, state and edeploy.conf.
