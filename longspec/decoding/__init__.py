"""One decode loop; strategies differ in how they propose and verify."""
