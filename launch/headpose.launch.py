"""Start headpose_ros on a camera and auto-activate it.

    ros2 launch headpose_ros headpose.launch.py image:=/camera/color/image_raw \
        camera_info:=/camera/color/camera_info

Arguments: namespace, params_file (default: the package's config/headpose.yaml), image,
compressed_image (used with input.transport: compressed), camera_info, face_boxes (used with
input.external_boxes: true), use_sim_time (true when replaying a bag with
``ros2 bag play --clock``), log_level. Outputs appear under the namespace: faces, pose, poses,
markers, debug_image; diagnostics on /diagnostics.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

ARGUMENTS = {
    "namespace": ("headpose", "Namespace of the node and its output topics."),
    "params_file": (
        PathJoinSubstitution([FindPackageShare("headpose_ros"), "config", "headpose.yaml"]),
        "Parameter file (every parameter is documented in config/headpose.yaml).",
    ),
    "image": ("/camera/image_raw", "sensor_msgs/Image topic (input.transport: raw)."),
    "compressed_image": (
        "/camera/image_raw/compressed",
        "sensor_msgs/CompressedImage topic (input.transport: compressed).",
    ),
    "camera_info": ("/camera/camera_info", "sensor_msgs/CameraInfo of the image (metric pose)."),
    "face_boxes": ("/faces/boxes", "Upstream face boxes (input.external_boxes: true)."),
    "use_sim_time": (
        "false",
        "Take time from /clock (true when replaying a bag with `ros2 bag play --clock`): "
        "stamps of /diagnostics and its period follow the bag.",
    ),
    "log_level": ("info", "Logging level of the node."),
}


def generate_launch_description() -> LaunchDescription:
    """Declare the arguments and the auto-activating head-pose node."""
    arguments = [
        DeclareLaunchArgument(name, default_value=default, description=description)
        for name, (default, description) in ARGUMENTS.items()
    ]
    node = Node(
        package="headpose_ros",
        executable="headpose_node",
        name="headpose",
        namespace=LaunchConfiguration("namespace"),
        parameters=[
            LaunchConfiguration("params_file"),
            {"autostart": True, "use_sim_time": LaunchConfiguration("use_sim_time")},
        ],
        remappings=[
            ("image", LaunchConfiguration("image")),
            ("image/compressed", LaunchConfiguration("compressed_image")),
            ("camera_info", LaunchConfiguration("camera_info")),
            ("face_boxes", LaunchConfiguration("face_boxes")),
        ],
        arguments=["--ros-args", "--log-level", LaunchConfiguration("log_level")],
        output="screen",
        emulate_tty=True,
    )
    return LaunchDescription([*arguments, node])
