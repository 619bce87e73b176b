"""The joiner: road and driver uploads in, clips out (join rules, segment validation, clip building, the Faust app)."""
