# Another struct altogether.
@0xb8e1d2c3f4a5b607;

struct Session @0xc2d3e4f5a6b7c8d9 {
  user @0 :Text;
}
